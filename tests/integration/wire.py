"""A small client of the tether protocol (docs/PROTOCOL.md) for tests that play a peer the
real `tether connect` would never be: frames of every type built by hand, read back with
deadlines, and connections ended however a test needs (orderly, or abruptly with a reset).

    conn = wire.Conn.to_server(server)            # TLS, CA and host name checked
    welcome = conn.handshake(server.token)        # HELLO -> WELCOME
    conn.send(wire.open_stream(1, "dev-1", 7))
    result = conn.read_frame(timeout=5)           # Frame(OPEN_RESULT, id 1, code=0, ...)
    frames, how = conn.read_until_closed(timeout=3)

Standard library only. Encoders return bytes, so frames can be joined into one write.
"""

import os
import socket
import ssl
import struct
import time

import harness

# Frame types
HELLO = 0
WELCOME = 1
REFUSE = 2
OPEN = 3
OPEN_RESULT = 4
DATA = 5
WINDOW_UPDATE = 6
RESET = 7
PING = 8
GOAWAY = 9

TYPE_NAMES = {HELLO: "HELLO", WELCOME: "WELCOME", REFUSE: "REFUSE", OPEN: "OPEN",
              OPEN_RESULT: "OPEN_RESULT", DATA: "DATA", WINDOW_UPDATE: "WINDOW_UPDATE",
              RESET: "RESET", PING: "PING", GOAWAY: "GOAWAY"}

# Flags
FIN = 0x1  # on DATA
ACK = 0x1  # on PING

# Codes of REFUSE, OPEN_RESULT, RESET and GOAWAY
OK = 0
UNKNOWN_DEVICE = 1
FORBIDDEN = 2
REFUSED = 3
UNREACHABLE = 4
TIMED_OUT = 5
BAD_TOKEN = 6
PROTOCOL_ERROR = 7
FLOW_CONTROL_ERROR = 8
FRAME_TOO_LARGE = 9
VERSION_MISMATCH = 10
TOO_MANY_STREAMS = 11
GOING_AWAY = 12
STREAM_RESET = 13
SESSION_LOST = 14
INTERNAL = 15
UNSUPPORTED = 16

# Roles and stream protocols in HELLO and OPEN
ROLE_CLIENT = 0
ROLE_AGENT = 1
TCP = 0
UDP = 1

TCP_ESTABLISHED = 1  # Conn.tcp_state() of an open connection

VERSION = 1
HEADER = struct.Struct("!IBI")  # (length << 8 | type), flags, stream id: 9 bytes
MAX_PAYLOAD = 65536
MAX_DATA_PAYLOAD = 16384
DEFAULT_WINDOW = 2 << 20


def _text(message):
    return message if isinstance(message, bytes) else str(message).encode("utf-8")


def _message(message):
    """A length-prefixed (u16) message field."""
    b = _text(message)
    return struct.pack("!H", len(b)) + b


# ---------------------------------------------------------------------------------------------
# Encoders: each returns the whole frame as bytes.

def frame(ftype, payload=b"", *, flags=0, stream_id=0):
    """Any frame, valid or not: a 9-byte header and `payload` as given."""
    if len(payload) >= 1 << 24:
        raise ValueError("payload too long for the 24-bit length field")
    return HEADER.pack(len(payload) << 8 | ftype, flags, stream_id) + payload


def hello(token, *, role=ROLE_CLIENT, session_window=16 << 20, stream_window=DEFAULT_WINDOW,
          version=VERSION):
    """HELLO: the first frame of a client (or agent) with its windows and token."""
    t = _text(token)
    return frame(HELLO, struct.pack("!HBIIH", version, role, session_window, stream_window,
                                    len(t)) + t)


def welcome(*, session_window=16 << 20, stream_window=DEFAULT_WINDOW, keepalive_ms=15000,
            version=VERSION):
    """WELCOME: a server's answer to an accepted HELLO."""
    return frame(WELCOME, struct.pack("!HIII", version, session_window, stream_window,
                                      keepalive_ms))


def refuse(code, message):
    """REFUSE: a server's answer to a HELLO it does not accept."""
    return frame(REFUSE, struct.pack("!B", code) + _message(message))


def open_stream(stream_id, device, port, *, window=DEFAULT_WINDOW, proto=TCP):
    """OPEN: asks for a stream to device:port (odd ids from clients, ascending)."""
    d = _text(device)
    return frame(OPEN, struct.pack("!BHIB", proto, port, window, len(d)) + d,
                 stream_id=stream_id)


def open_result(stream_id, code=OK, *, window=DEFAULT_WINDOW, message=""):
    """OPEN_RESULT: the answer to an OPEN (code 0 with a window, or a refusal)."""
    return frame(OPEN_RESULT, struct.pack("!BI", code, window) + _message(message),
                 stream_id=stream_id)


def data(stream_id, payload=b"", *, fin=False):
    """DATA: bytes of one stream (at most 16 KiB); fin=True half-closes the sender's side."""
    return frame(DATA, bytes(payload), flags=FIN if fin else 0, stream_id=stream_id)


def window_update(stream_id, increment):
    """WINDOW_UPDATE: returns `increment` bytes of credit (stream 0: the session's)."""
    return frame(WINDOW_UPDATE, struct.pack("!I", increment), stream_id=stream_id)


def reset(stream_id, code, message=""):
    """RESET: ends both directions of a stream at once, with a reason."""
    return frame(RESET, struct.pack("!B", code) + _message(message), stream_id=stream_id)


def ping(opaque=0, *, ack=False):
    """PING (or its ACK): 8 opaque bytes, given as an int or as 8 bytes."""
    if isinstance(opaque, int):
        opaque = struct.pack("!Q", opaque)
    if len(opaque) != 8:
        raise ValueError("PING carries exactly 8 opaque bytes")
    return frame(PING, bytes(opaque), flags=ACK if ack else 0)


def goaway(last_stream_id, code, message=""):
    """GOAWAY: the sender takes no streams above `last_stream_id` and will close."""
    return frame(GOAWAY, struct.pack("!IB", last_stream_id, code) + _message(message))


# ---------------------------------------------------------------------------------------------
# Decoding

class Frame:
    """A received frame: type, flags, stream_id, payload, and the fields of its type as
    attributes (version, role, session_window, stream_window, keepalive_ms, token, code,
    message, window, proto, port, device, increment, opaque, ack, fin, last_stream_id).
    A payload that does not fit its type leaves `malformed` set to the reason."""

    def __init__(self, ftype, flags, stream_id, payload):
        self.type, self.flags, self.stream_id, self.payload = ftype, flags, stream_id, payload
        self.malformed = None
        try:
            self._decode_fields()
        except (struct.error, IndexError, ValueError) as e:
            self.malformed = str(e)

    @property
    def name(self):
        return TYPE_NAMES.get(self.type, "TYPE%d" % self.type)

    def _message_at(self, offset):
        (n,) = struct.unpack_from("!H", self.payload, offset)
        raw = self.payload[offset + 2:offset + 2 + n]
        if len(raw) != n:
            raise ValueError("message shorter than its length field")
        return raw.decode("utf-8", "replace")

    def _decode_fields(self):
        p, t = self.payload, self.type
        if t == HELLO:
            (self.version, self.role, self.session_window, self.stream_window,
             n) = struct.unpack_from("!HBIIH", p)
            self.token = p[13:13 + n].decode("utf-8", "replace")
        elif t == WELCOME:
            (self.version, self.session_window, self.stream_window,
             self.keepalive_ms) = struct.unpack_from("!HIII", p)
        elif t == REFUSE:
            (self.code,) = struct.unpack_from("!B", p)
            self.message = self._message_at(1)
        elif t == OPEN:
            self.proto, self.port, self.window, n = struct.unpack_from("!BHIB", p)
            self.device = p[8:8 + n].decode("utf-8", "replace")
        elif t == OPEN_RESULT:
            self.code, self.window = struct.unpack_from("!BI", p)
            self.message = self._message_at(5)
        elif t == DATA:
            self.fin = bool(self.flags & FIN)
        elif t == WINDOW_UPDATE:
            (self.increment,) = struct.unpack_from("!I", p)
        elif t == RESET:
            (self.code,) = struct.unpack_from("!B", p)
            self.message = self._message_at(1)
        elif t == PING:
            self.ack = bool(self.flags & ACK)
            self.opaque = bytes(p[:8])
        elif t == GOAWAY:
            self.last_stream_id, self.code = struct.unpack_from("!IB", p)
            self.message = self._message_at(5)

    def __repr__(self):
        fields = []
        for k in ("code", "message", "window", "device", "port", "increment", "ack", "fin",
                  "last_stream_id", "session_window", "stream_window", "keepalive_ms"):
            if hasattr(self, k):
                fields.append("%s=%r" % (k, getattr(self, k)))
        if self.type == DATA:
            fields.append("%d bytes" % len(self.payload))
        if self.malformed:
            fields.append("malformed: %s" % self.malformed)
        return "Frame(%s, id %d%s)" % (self.name, self.stream_id,
                                       "".join(", " + f for f in fields))


def decode(buf):
    """Splits the complete frames off the front of `buf`: returns (frames, bytes used)."""
    frames, offset = [], 0
    while len(buf) - offset >= HEADER.size:
        word, flags, sid = HEADER.unpack_from(buf, offset)
        length, ftype = word >> 8, word & 0xFF
        end = offset + HEADER.size + length
        if end > len(buf):
            break
        frames.append(Frame(ftype, flags, sid, bytes(buf[offset + HEADER.size:end])))
        offset = end
    return frames, offset


class Closed(Exception):
    """The peer closed the connection while a frame was expected; `how` is 'eof' or 'reset'."""

    def __init__(self, how, frames=()):
        super().__init__("connection closed (%s)" % how)
        self.how, self.frames = how, list(frames)


# ---------------------------------------------------------------------------------------------
# A connection

def tls_context(ca):
    """A client TLS context that trusts `ca` and checks the host name, like tether connect."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Conn:
    """One TLS connection speaking frames. Every read has a deadline; none blocks forever."""

    def __init__(self, sock):
        self.sock = sock
        self._buf = bytearray()
        self.closed_how = None  # 'eof' or 'reset' once the peer has closed
        self.bytes_received = 0

    @classmethod
    def to_server(cls, server, *, source=None, timeout=10.0):
        """Connects to a harness Server over TLS (its CA, host name checked); `source`
        binds the local address first (e.g. "127.0.0.9")."""
        return cls.connect(server.host, server.port, server.ca, source=source, timeout=timeout)

    @classmethod
    def connect(cls, host, port, ca, *, source=None, timeout=10.0):
        """TLS connection to host:port whose certificate must chain to `ca` and name `host`."""
        raw = socket.create_connection((host, port), timeout=harness.scaled(timeout),
                                       source_address=(source, 0) if source else None)
        try:
            tls = tls_context(ca).wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        return cls(tls)

    def close(self):
        """Closes the socket without a TLS close_notify (the server sees a plain EOF)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def close_abruptly(self):
        """Closes with SO_LINGER 0: the kernel drops what is unsent and sends a TCP reset."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def tcp_state(self):
        """The kernel's state of the TCP connection (TCP_INFO), read without reading any
        data: TCP_ESTABLISHED while both ends are open; another state once the peer's
        FIN or reset has arrived."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return info[0]

    def drain_until_closed(self, timeout=5.0, limit=256 << 20):
        """Reads and drops the raw bytes under TLS (no decryption, no frames) until the
        peer closes: for a connection the test has given up on whose peer may have queued
        megabytes. Returns (bytes dropped, 'eof' or 'reset'); fails the test if the peer
        has not closed after `timeout` s (scaled) or sent more than `limit` bytes."""
        raw = socket.socket(fileno=os.dup(self.sock.fileno()))
        deadline = time.monotonic() + harness.scaled(timeout)
        dropped = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("connection still open after %.1f s (%d bytes read)"
                                         % (harness.scaled(timeout), dropped))
                raw.settimeout(left)
                try:
                    b = raw.recv(1 << 20)
                except socket.timeout:
                    continue
                except (ConnectionResetError, ConnectionAbortedError):
                    return dropped, "reset"
                if not b:
                    return dropped, "eof"
                dropped += len(b)
                if dropped > limit:
                    raise AssertionError("peer sent more than %d bytes instead of closing"
                                         % limit)
        finally:
            raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending -------------------------------------------------------------------------------

    def send(self, *frames, timeout=10.0):
        """Writes the frames (bytes from the encoders above) in one sendall."""
        self.sock.settimeout(harness.scaled(timeout))
        self.sock.sendall(b"".join(frames))

    def handshake(self, token, timeout=10.0, **hello_fields):
        """Sends HELLO and returns the WELCOME frame; fails the test on anything else."""
        self.send(hello(token, **hello_fields))
        f = self.read_frame(timeout)
        if f.type != WELCOME:
            raise AssertionError("expected WELCOME after HELLO, got %r" % f)
        return f

    # -- receiving -----------------------------------------------------------------------------

    def _fill(self, deadline):
        """Reads once into the buffer. False at the deadline; raises Closed on EOF/reset."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            b = self.sock.recv(256 * 1024)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            b = b""
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLError):
            self.closed_how = "reset"
            raise Closed("reset")
        if not b:
            self.closed_how = "eof"
            raise Closed("eof")
        self._buf += b
        self.bytes_received += len(b)
        return True

    def _next_frame(self, deadline):
        """The next frame, or None once `deadline` (monotonic) passes; raises Closed."""
        while True:
            frames, _ = decode(self._buf)
            if frames:
                first = frames[0]
                del self._buf[:HEADER.size + len(first.payload)]
                return first
            if not self._fill(deadline):
                return None

    def poll_frames(self, timeout=0.0):
        """The frames already buffered or arriving within `timeout` s (maybe none).
        Raises Closed when the peer has closed and nothing complete is buffered."""
        deadline = time.monotonic() + timeout
        while True:
            frames, used = decode(self._buf)
            if frames:
                del self._buf[:used]
                return frames
            if not self._fill(deadline):
                return []

    def read_frame(self, timeout=10.0):
        """The next frame. Fails the test after `timeout` s (scaled); raises Closed if the
        peer closes first."""
        f = self._next_frame(time.monotonic() + harness.scaled(timeout))
        if f is None:
            raise AssertionError("no frame within %.1f s (%d bytes buffered)"
                                 % (harness.scaled(timeout), len(self._buf)))
        return f

    def read_until(self, predicate, timeout=10.0, what="a matching frame"):
        """Reads until a frame matches `predicate`; returns (that frame, frames before it).
        Fails the test after `timeout` s; raises Closed (with the frames seen) on a close."""
        deadline = time.monotonic() + harness.scaled(timeout)
        seen = []
        while True:
            try:
                f = self._next_frame(deadline)
            except Closed as e:
                raise Closed(e.how, seen) from None
            if f is None:
                raise AssertionError("timed out after %.1f s waiting for %s; saw %r"
                                     % (harness.scaled(timeout), what, seen[-20:]))
            if predicate(f):
                return f, seen
            seen.append(f)

    def read_until_closed(self, timeout=5.0, *, fail_if_open=True, limit=64 << 20):
        """Reads frames until the peer closes. Returns (frames, how), how being 'eof' or
        'reset', or 'open' if `fail_if_open` is False and the connection is still open after
        `timeout` s (scaled); with fail_if_open the test fails instead. Bytes that do not
        make a whole frame are dropped at the close."""
        deadline = time.monotonic() + harness.scaled(timeout)
        frames = []
        start = self.bytes_received
        while True:
            new, used = decode(self._buf)
            if new:
                del self._buf[:used]
                frames.extend(new)
                continue
            if self.bytes_received - start > limit:
                raise AssertionError("peer sent more than %d bytes instead of closing" % limit)
            try:
                if not self._fill(deadline):
                    if fail_if_open:
                        raise AssertionError("connection still open after %.1f s; frames: %r"
                                             % (harness.scaled(timeout), frames[-20:]))
                    return frames, "open"
            except Closed as e:
                self._buf.clear()
                return frames, e.how


def first_of(frames, ftype):
    """The first frame of type `ftype` in `frames`, or None."""
    return next((f for f in frames if f.type == ftype), None)


def random_ping():
    """A PING with random opaque bytes."""
    return ping(os.urandom(8))
