"""Shared fixtures for tether's integration tests (python3 standard library only).

The tests start the real `tether` binary as server and client on loopback and drive real
peers through it: threaded TCP and UDP services on 127.0.1.x addresses that stand in for
devices, a private OpenSSH sshd, an HTTP server, dnsmasq, socat, `ssh`, `curl` and `dig`.
They check bytes end to end with SHA-256 and wait on printed lines and counters with
deadlines, never on sleeps.

Everything a test starts is stopped by the test's cleanups (and, as a last resort, at exit).

Environment:
  TETHER_BIN                 the binary under test (ctest sets it); default <source>/build/tether
  TETHER_SOURCE_DIR          the source tree (ctest sets it)
  TETHER_TEST_TIMEOUT_SCALE  multiplies every deadline (slow machines, sanitizer builds)
  TETHER_TEST_LOG_LEVEL      passed as --log-level to every tether process
  TETHER_TEST_SERVER_WORKERS passed as --workers to every `tether server` the fixtures start
                             (unless the test gives its own); unset: the server's default,
                             one worker per CPU
"""

import atexit
import getpass
import hashlib
import json as jsonlib
import os
import random
import re
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("TETHER_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
TIMEOUT_SCALE = float(os.environ.get("TETHER_TEST_TIMEOUT_SCALE", "1") or "1")
LOG_LEVEL = os.environ.get("TETHER_TEST_LOG_LEVEL", "")
SERVER_WORKERS = os.environ.get("TETHER_TEST_SERVER_WORKERS", "")

KiB = 1 << 10
MiB = 1 << 20
CHUNK = MiB  # unit of the deterministic byte streams; both ends must use the same


def tether_bin():
    """Path of the tether binary under test."""
    return os.environ.get("TETHER_BIN") or os.path.join(SOURCE_DIR, "build", "tether")


def scaled(seconds):
    """A deadline in seconds, stretched by TETHER_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def device_addr(n):
    """The loopback address that stands for device number n (127.0.1.n)."""
    if not 1 <= n <= 254:
        raise ValueError("device number out of range: %r" % n)
    return "127.0.1.%d" % n


def wait_until(predicate, timeout, what):
    """Polls `predicate` until it is true; fails the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (scaled(timeout), what))
        time.sleep(0.01)


def free_port(host="127.0.0.1"):
    """A port the OS just handed out on `host` (bound to 0, read back, released).

    Only for programs that cannot bind port 0 themselves (sshd); a small race remains.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_hostport(text):
    """'127.0.0.1:7443' or '[::1]:7443' -> (host, port)."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


# ---------------------------------------------------------------------------------------------
# Processes

_live = set()
_live_lock = threading.Lock()


def _stop_all_live():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        p.stop(grace=1.0)


atexit.register(_stop_all_live)


class Proc:
    """A started process whose stdout and stderr are collected line by line by two threads.

    Registered for cleanup at exit; TetherTest.start() also registers stop() with the test.
    """

    def __init__(self, argv, *, name=None, env=None, cwd=None, stdin=None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self._cond = threading.Condition()
        self.lines = {"stdout": [], "stderr": []}
        self._eof = {"stdout": False, "stderr": False}
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        with _live_lock:
            _live.add(self)
        self._readers = [
            threading.Thread(target=self._read, args=("stdout", self.popen.stdout), daemon=True),
            threading.Thread(target=self._read, args=("stderr", self.popen.stderr), daemon=True),
        ]
        for t in self._readers:
            t.start()
        if stdin is not None:  # fed from a thread, so a chatty process cannot deadlock us
            threading.Thread(target=self._feed, args=(stdin,), daemon=True).start()

    def _feed(self, data):
        try:
            self.popen.stdin.write(data)
            self.popen.stdin.close()
        except OSError:
            pass  # the process exited or closed its stdin early; its exit code tells

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        """Exit code, or None while running (a signal shows as its negative number)."""
        return self.popen.poll()

    def running(self):
        return self.popen.poll() is None

    def _read(self, stream, pipe):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self.lines[stream].append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof[stream] = True
            self._cond.notify_all()
        pipe.close()

    def mark(self, stream="stdout"):
        """The number of lines seen so far; pass as `after` to look only at newer lines."""
        with self._cond:
            return len(self.lines[stream])

    def _streams(self, stream):
        return ["stdout", "stderr"] if stream == "both" else [stream]

    def wait_for(self, predicate, timeout=30.0, stream="stdout", after=0, what=None):
        """Waits until a line (in `stream`: stdout, stderr or both, index >= `after`) matches.

        `predicate` is a callable(line) -> bool, a regex string or a compiled regex.
        Returns (stream, index, line). Fails the test, with the output so far, when the
        deadline passes or the process closes the stream first.
        """
        if isinstance(predicate, str):
            predicate = re.compile(predicate)
        if isinstance(predicate, re.Pattern):
            what = what or "a line matching %r" % predicate.pattern
            pred = predicate.search
        else:
            what = what or "a matching line"
            pred = predicate
        streams = self._streams(stream)
        checked = {s: after for s in streams}
        deadline = time.monotonic() + scaled(timeout)
        with self._cond:
            while True:
                for s in streams:
                    lines = self.lines[s]
                    for i in range(checked[s], len(lines)):
                        if pred(lines[i]):
                            return s, i, lines[i]
                    checked[s] = len(lines)
                if all(self._eof[s] for s in streams):
                    self.popen.wait()
                    self._fail("%s exited with code %s before printing %s on %s"
                               % (self.name, self.popen.returncode, what, stream))
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail("timed out after %.1f s waiting for %s to print %s on %s"
                               % (scaled(timeout), self.name, what, stream))
                self._cond.wait(min(left, 0.5))

    def wait_line(self, predicate, timeout=30.0, stream="stdout", after=0):
        """Like wait_for, returning only the matched line."""
        return self.wait_for(predicate, timeout, stream, after)[2]

    @staticmethod
    def _parse_json(line):
        if not line.startswith("{"):
            return None
        try:
            value = jsonlib.loads(line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def json_event(self, name, timeout=30.0, after=0, **fields):
        """Waits for a JSON line on stdout with "event": name and the given field values."""
        def match(line):
            ev = self._parse_json(line)
            return (ev is not None and ev.get("event") == name
                    and all(ev.get(k) == v for k, v in fields.items()))
        what = "a json %r event%s" % (name, " with %r" % fields if fields else "")
        _, _, line = self.wait_for(match, timeout, "stdout", after, what=what)
        return jsonlib.loads(line)

    def json_events(self, name, after=0):
        """All JSON events called `name` printed on stdout so far."""
        with self._cond:
            lines = list(self.lines["stdout"][after:])
        return [ev for ev in map(self._parse_json, lines) if ev and ev.get("event") == name]

    def wait(self, timeout=30.0):
        """Waits for the process to exit by itself and returns its exit code."""
        try:
            code = self.popen.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self._fail("%s did not exit within %.1f s" % (self.name, scaled(timeout)))
        self._join_readers()
        return code

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL if it has not exited after `grace` s; returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(scaled(grace))
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            except ProcessLookupError:
                pass
        self._join_readers()
        return self.popen.returncode

    def kill(self):
        """SIGKILL at once; returns the exit code (-9)."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self._join_readers()
        return self.popen.returncode

    def _join_readers(self):
        for t in self._readers:
            t.join(5)
        with _live_lock:
            _live.discard(self)

    def rss_kib(self):
        """Resident set size from /proc/PID/status (VmRSS) in KiB."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for %s (pid %d)" % (self.name, self.pid))

    def output(self, tail=60):
        """The last `tail` lines of stdout and stderr, for failure messages."""
        with self._cond:
            parts = []
            for s in ("stdout", "stderr"):
                lines = self.lines[s]
                shown = lines[-tail:] if tail else lines
                skipped = len(lines) - len(shown)
                parts.append("--- %s %s (pid %d)%s ---" % (
                    self.name, s, self.popen.pid,
                    ", %d earlier lines not shown" % skipped if skipped else ""))
                parts.extend(shown)
        return "\n".join(parts)

    def _fail(self, message):
        raise AssertionError("%s\ncommand: %s\n%s" % (message, " ".join(self.argv), self.output()))


# ---------------------------------------------------------------------------------------------
# Certificates (real ones, made with the openssl command)

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), r.stderr))


def make_ca(directory, name="tether test CA"):
    """Creates ca.crt and ca.key (EC P-256) in `directory`; returns the certificate's path."""
    os.makedirs(directory, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", "/CN=%s %08x" % (name, random.getrandbits(32)),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return os.path.join(directory, "ca.crt")


def make_server_cert(directory, ca_dir, names=("127.0.0.1", "::1", "localhost")):
    """Creates server.crt/server.key in `directory`, signed by the CA in `ca_dir`."""
    os.makedirs(directory, exist_ok=True)
    sans = ",".join(("IP:%s" if re.match(r"^[0-9.:]+$", n) else "DNS:%s") % n for n in names)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" % sans)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=%s" % names[0],
             cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", os.path.join(ca_dir, "ca.crt"),
             "-CAkey", os.path.join(ca_dir, "ca.key"),
             "-set_serial", "0x%016x" % random.getrandbits(63), "-days", "30",
             "-extfile", "server.ext", "-out", "server.crt", cwd=directory)
    return os.path.join(directory, "server.crt"), os.path.join(directory, "server.key")


_pki_lock = threading.Lock()
_pki_dir = None


def shared_pki():
    """A CA and a server certificate for 127.0.0.1/::1/localhost, made once per process.

    Returns a dict with the paths: ca, cert, key.
    """
    global _pki_dir
    with _pki_lock:
        if _pki_dir is None:
            d = tempfile.mkdtemp(prefix="tether-it-pki-")
            atexit.register(shutil.rmtree, d, True)
            make_ca(d)
            make_server_cert(d, d)
            _pki_dir = d
    return {"ca": os.path.join(_pki_dir, "ca.crt"),
            "cert": os.path.join(_pki_dir, "server.crt"),
            "key": os.path.join(_pki_dir, "server.key")}


def new_token():
    """A fresh random token and the sha256 hex a server config stores for it."""
    token = "tt_" + os.urandom(24).hex()
    return token, hashlib.sha256(token.encode()).hexdigest()


def toml_str(s):
    return jsonlib.dumps(str(s))  # a JSON string is a valid TOML basic string for our values


def credential_toml(name, token_sha256, allow):
    """A [[credential]] table for a config_server() text."""
    return "[[credential]]\nname = %s\ntoken_sha256 = %s\nallow = [%s]\n\n" % (
        toml_str(name), toml_str(token_sha256), ", ".join(toml_str(a) for a in allow))


def device_toml(device_id, address):
    """A [[device]] table for a config_server() text."""
    return "[[device]]\nid = %s\naddress = %s\n\n" % (toml_str(device_id), toml_str(address))


# ---------------------------------------------------------------------------------------------
# Deterministic random byte streams and transfers through sockets

def det_chunks(seed, n):
    """Yields n pseudo-random bytes determined by `seed`, CHUNK bytes at a time."""
    r = random.Random(seed)
    while n > 0:
        b = r.randbytes(CHUNK)
        if n < CHUNK:
            b = b[:n]
        n -= len(b)
        yield b


def det_sha256(seed, n):
    h = hashlib.sha256()
    for b in det_chunks(seed, n):
        h.update(b)
    return h.hexdigest()


def recv_exact(sock, n, deadline=None):
    """Reads exactly n bytes (fewer only if the peer closes first)."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline passed after %d of %d bytes" % (len(buf), n))
            sock.settimeout(left)
        b = sock.recv(min(n - len(buf), 1 << 20))
        if not b:
            break
        buf += b
    return bytes(buf)


def recv_until_closed(sock, timeout=15.0, limit=16 * MiB):
    """Reads until the peer closes. Returns (bytes, how) with how = 'eof' or 'reset'.

    Fails the test if the connection is still open after `timeout` s.
    """
    deadline = time.monotonic() + scaled(timeout)
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %.1f s (%d bytes read)"
                                 % (scaled(timeout), len(data)))
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return bytes(data), "reset"
        except ssl.SSLError:
            return bytes(data), "reset"
        if not b:
            return bytes(data), "eof"
        data += b
        if len(data) > limit:
            raise AssertionError("peer sent more than %d bytes instead of closing" % limit)


class Transfer:
    """Outcome of transfer(): byte counts and hex digests seen by both ends."""

    def __init__(self):
        self.sent = self.received = 0
        self.sent_sha = self.received_sha = None
        self.device_sent_sha = self.device_received_sha = None
        self.seconds = 0.0

    def __repr__(self):
        return "Transfer(sent=%d, received=%d, %.2fs)" % (self.sent, self.received, self.seconds)


SINK_SOURCE_HEADER = struct.Struct("!QQQ")  # bytes the client sends, bytes it wants, seed


def transfer(port, up=0, down=0, *, host="127.0.0.1", seed_up=None, seed_down=None,
             timeout=120.0, sock=None):
    """One exchange with a SinkSourceServer through `port`, both directions at once.

    Sends `up` deterministic random bytes while receiving `down` bytes from the device,
    then compares SHA-256 digests with the ones the device reports; expects the device's
    orderly close after its trailer. Streams: never holds the payload in memory.
    Raises AssertionError on any mismatch or when `timeout` s pass.
    """
    seed_up = random.getrandbits(63) if seed_up is None else seed_up
    seed_down = random.getrandbits(63) if seed_down is None else seed_down
    deadline = time.monotonic() + scaled(timeout)
    start = time.monotonic()
    s = sock or socket.create_connection((host, port), timeout=scaled(timeout))
    s.settimeout(scaled(timeout))
    res = Transfer()
    errors = []

    def send():
        h = hashlib.sha256()
        try:
            s.sendall(SINK_SOURCE_HEADER.pack(up, down, seed_down))
            for b in det_chunks(seed_up, up):
                if time.monotonic() > deadline:
                    raise socket.timeout("deadline passed while sending")
                s.sendall(b)
                h.update(b)
                res.sent += len(b)
        except OSError as e:
            errors.append("sending after %d of %d bytes: %r" % (res.sent, up, e))
        res.sent_sha = h.hexdigest()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        h = hashlib.sha256()
        want = down + 64
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        trailer = bytearray()
        got = 0
        while got < want:
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %d of %d bytes received (%d sent)"
                                     % (got, want, res.sent))
            try:
                n = s.recv_into(view[:min(CHUNK, want - got)])
            except OSError as e:
                raise AssertionError("receiving after %d of %d bytes (%d sent): %r"
                                     % (got, want, res.sent, e))
            if n == 0:
                raise AssertionError("connection closed after %d of %d bytes (%d sent)"
                                     % (got, want, res.sent))
            data_n = max(0, min(n, down - got))
            if data_n:
                h.update(view[:data_n])
            if n > data_n:
                trailer += view[data_n:n]
            got += n
        res.received = down
        res.received_sha = h.hexdigest()
        res.device_sent_sha = trailer[:32].hex()
        res.device_received_sha = trailer[32:64].hex()
        sender.join(max(0.0, deadline - time.monotonic()))
        if sender.is_alive():
            raise AssertionError("sender still busy at the deadline (%d of %d sent)"
                                 % (res.sent, up))
        if errors:
            raise AssertionError(errors[0])
        tail, how = recv_until_closed(s, timeout=max(1.0, deadline - time.monotonic()))
        if tail or how != "eof":
            raise AssertionError("expected an orderly close after the trailer, got %d more "
                                 "bytes and %s" % (len(tail), how))
    finally:
        if sock is None:
            s.close()
    res.seconds = time.monotonic() - start
    if res.device_received_sha != res.sent_sha:
        raise AssertionError("device received other bytes than were sent (%d bytes): "
                             "%s != %s" % (up, res.device_received_sha, res.sent_sha))
    if res.device_sent_sha != res.received_sha:
        raise AssertionError("received other bytes than the device sent (%d bytes): "
                             "%s != %s" % (down, res.received_sha, res.device_sent_sha))
    return res


def open_source(port, down, seed, host="127.0.0.1"):
    """Opens a SinkSourceServer exchange that only asks for `down` bytes; returns the socket.

    The caller reads at its own pace (read_expected) and closes the socket.
    """
    s = socket.create_connection((host, port), timeout=scaled(30))
    s.sendall(SINK_SOURCE_HEADER.pack(0, down, seed))
    return s


def read_expected(sock, seed, n, timeout=60.0):
    """Reads n bytes and fails unless they are the first n bytes of det_chunks(seed)."""
    deadline = time.monotonic() + scaled(timeout)
    offset = 0
    for expected in det_chunks(seed, n):
        got = recv_exact(sock, len(expected), deadline)
        if got != expected:
            if len(got) < len(expected):
                raise AssertionError("stream ended after %d of %d bytes" % (offset + len(got), n))
            i = next(i for i in range(len(got)) if got[i] != expected[i])
            raise AssertionError("byte %d differs from what the device sent" % (offset + i))
        offset += len(got)


def echo_roundtrip(port, data, host="127.0.0.1", timeout=60.0):
    """Sends `data` to an echo service through `port` and fails unless it comes back whole."""
    deadline = time.monotonic() + scaled(timeout)
    with socket.create_connection((host, port), timeout=scaled(timeout)) as s:
        errors = []

        def send():
            try:
                s.sendall(data)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = recv_exact(s, len(data), deadline)
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise AssertionError("sending to the echo service failed: %r" % errors[0])
    if got != data:
        raise AssertionError("echo returned %d bytes that differ from the %d sent"
                             % (len(got), len(data)))


def run_echo_clients(port, count, size, *, host="127.0.0.1", timeout=120.0,
                     before_sending=None):
    """`count` concurrent connections to an echo service, each sending and reading `size`.

    One thread drives all sockets (non-blocking, selectors). Each connection sends a
    different rotation of one random block, so crossed streams are caught.
    `before_sending()`, if given, runs after all connections are made and before any byte
    is sent (e.g. to wait until the device sees them all). Fails unless every connection
    gets back exactly what it sent. Returns the elapsed seconds.
    """
    base = random.Random(count * 1000003 + size).randbytes(size)
    doubled = memoryview(base + base)
    payloads = [doubled[(i * 7919) % max(1, size):][:size] for i in range(count)]
    expected = [hashlib.sha256(p).hexdigest() for p in payloads]
    deadline = time.monotonic() + scaled(timeout)
    start = time.monotonic()
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection((host, port), timeout=scaled(30)))
        if before_sending:
            before_sending()
        sel = selectors.DefaultSelector()
        state = []
        for i, s in enumerate(socks):
            s.setblocking(False)
            st = {"i": i, "sent": 0, "recv": 0, "h": hashlib.sha256(), "closed": None}
            state.append(st)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
        buf = bytearray(65536)
        pending = count
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                late = [st for st in state if st["recv"] < size]
                raise AssertionError(
                    "%d of %d connections unfinished after %.1f s; e.g. #%d sent %d, got %d"
                    % (len(late), count, scaled(timeout), late[0]["i"], late[0]["sent"],
                       late[0]["recv"]))
            for key, events in sel.select(min(left, 1.0)):
                s, st = key.fileobj, key.data
                if events & selectors.EVENT_WRITE and st["sent"] < size:
                    try:
                        st["sent"] += s.send(payloads[st["i"]][st["sent"]:st["sent"] + 65536])
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        raise AssertionError("connection #%d: send failed after %d bytes: %r"
                                             % (st["i"], st["sent"], e))
                    if st["sent"] >= size:
                        sel.modify(s, selectors.EVENT_READ, st)
                if events & selectors.EVENT_READ:
                    try:
                        n = s.recv_into(buf)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        raise AssertionError("connection #%d: recv failed after %d bytes: %r"
                                             % (st["i"], st["recv"], e))
                    if n == 0:
                        raise AssertionError("connection #%d closed after %d of %d bytes"
                                             % (st["i"], st["recv"], size))
                    st["h"].update(memoryview(buf)[:n])
                    st["recv"] += n
                    if st["recv"] > size:
                        raise AssertionError("connection #%d got more bytes than it sent"
                                             % st["i"])
                    if st["recv"] == size:
                        sel.unregister(s)
                        pending -= 1
        bad = [st["i"] for st in state if st["h"].hexdigest() != expected[st["i"]]]
        if bad:
            raise AssertionError("%d connections got other bytes back, e.g. #%d"
                                 % (len(bad), bad[0]))
        sel.close()
    finally:
        for s in socks:
            s.close()
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# Device-side services on 127.0.1.x

class TcpService:
    """A threaded TCP server bound to (host, port 0); one thread per connection.

    Subclasses implement handle(conn, stats). Counters: connections (accepted so far),
    active (open now), errors (exceptions from handlers), and per-connection `stats` dicts.
    """

    name = "tcp service"

    def __init__(self, host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(1024)
        self.host, self.port = self.sock.getsockname()[:2]
        self._lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.errors = []
        self.stats = []
        self._conns = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # the listener was shut down by stop()
            with self._lock:
                if self._stopped:
                    conn.close()
                    return
                self.connections += 1
                self.active += 1
                self._conns.add(conn)
                stats = {"sent": 0, "received": 0}
                self.stats.append(stats)
            threading.Thread(target=self._run, args=(conn, stats), daemon=True).start()

    def _run(self, conn, stats):
        try:
            self.handle(conn, stats)
        except OSError as e:
            if not self._stopped:
                with self._lock:
                    self.errors.append(repr(e))
        finally:
            with self._lock:
                self.active -= 1
                self._conns.discard(conn)
            conn.close()

    def handle(self, conn, stats):
        raise NotImplementedError

    @staticmethod
    def finish(conn, timeout=30.0):
        """Half-closes, then drains until the peer closes too, so nothing turns into a RST."""
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(scaled(timeout))
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def stop(self):
        with self._lock:
            self._stopped = True
            conns = list(self._conns)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __repr__(self):
        return "<%s %s>" % (self.name, hostport(self.host, self.port))


class EchoServer(TcpService):
    """Echoes every byte; on EOF half-closes its side after the last byte."""

    name = "echo"

    def handle(self, conn, stats):
        while True:
            b = conn.recv(65536)
            if not b:
                break
            stats["received"] += len(b)
            conn.sendall(b)
            stats["sent"] += len(b)
        self.finish(conn)


class SinkSourceServer(TcpService):
    """Reads a header (up, down, seed), then at once reads `up` bytes and sends `down`
    bytes of det_chunks(seed); afterwards sends a 64-byte trailer: SHA-256 of what it
    sent, then of what it received; then closes in order.
    `stats[i]` has live counters "sent"/"received" and the "seed" of each connection.
    """

    name = "sink+source"

    def handle(self, conn, stats):
        header = recv_exact(conn, SINK_SOURCE_HEADER.size)
        if len(header) < SINK_SOURCE_HEADER.size:
            return
        up, down, seed = SINK_SOURCE_HEADER.unpack(header)
        stats["seed"] = seed
        sent_h = hashlib.sha256()
        send_error = []

        def source():
            try:
                for b in det_chunks(seed, down):
                    conn.sendall(b)
                    sent_h.update(b)
                    stats["sent"] += len(b)
            except OSError as e:
                send_error.append(e)

        sender = threading.Thread(target=source, daemon=True)
        sender.start()
        recv_h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while stats["received"] < up:
            n = conn.recv_into(view[:min(CHUNK, up - stats["received"])])
            if n == 0:
                break
            recv_h.update(view[:n])
            stats["received"] += n
        sender.join()
        if send_error:
            raise send_error[0]
        if stats["received"] < up:
            return  # the client gave up; nothing to report to
        conn.sendall(sent_h.digest() + recv_h.digest())
        self.finish(conn)

    def stats_for_seed(self, seed):
        with self._lock:
            for st in self.stats:
                if st.get("seed") == seed:
                    return st
        return None


def read_to_eof_digest(conn, stats):
    """Reads `conn` until EOF, counting into stats["received"]; returns the SHA-256 hex."""
    h = hashlib.sha256()
    while True:
        b = conn.recv(65536)
        if not b:
            break
        h.update(b)
        stats["received"] += len(b)
    return h.hexdigest()


class HalfCloseServer(TcpService):
    """Reads until EOF, then replies "<count> <sha256 hex>\\n" and closes."""

    name = "half-close"

    def handle(self, conn, stats):
        digest = read_to_eof_digest(conn, stats)
        reply = ("%d %s\n" % (stats["received"], digest)).encode()
        conn.sendall(reply)
        stats["sent"] += len(reply)
        conn.shutdown(socket.SHUT_WR)


def sshd_path():
    path = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin:" + os.environ.get("PATH", ""))
    if not path:
        raise RuntimeError("sshd not found (install openssh-server)")
    return path


def ssh_keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, capture_output=True, timeout=30)
    with open(path + ".pub") as f:
        return f.read().strip()


class Sshd:
    """A private OpenSSH server on (host, a port from the OS): own config and host key,
    key authentication only, for the current user, with a generated ed25519 user key.
    """

    def __init__(self, directory, host, allow_tcp_forwarding=True, extra_config="",
                 register=None):
        self.dir = directory
        self.host = host
        os.makedirs(directory, exist_ok=True)
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", 0o755, exist_ok=True)  # privilege separation dir
        self.host_key = os.path.join(directory, "host_ed25519")
        self.user_key = os.path.join(directory, "user_ed25519")
        self.host_public = ssh_keygen(self.host_key, "tether-test-host")
        self.user_public = ssh_keygen(self.user_key, "tether-test-user")
        self.authorized_keys = os.path.join(directory, "authorized_keys")
        with open(self.authorized_keys, "w") as f:
            f.write(self.user_public + "\n")
        os.chmod(self.authorized_keys, 0o600)
        self.user = getpass.getuser()
        self.config = os.path.join(directory, "sshd_config")
        self.proc = None
        for attempt in range(5):  # the port can be taken between free_port() and bind
            self.port = free_port(host)
            with open(self.config, "w") as f:
                f.write(self._config_text(allow_tcp_forwarding, extra_config))
            self.proc = Proc([sshd_path(), "-D", "-e", "-f", self.config], name="sshd")
            if register:
                register(self.proc)
            _, _, line = self.proc.wait_for(
                r"Server listening on|Cannot bind any address|Bind to port", timeout=30,
                stream="stderr")
            if "Server listening on" in line:
                return
            self.proc.stop()
        raise AssertionError("sshd could not bind a port on %s\n%s" % (host, self.proc.output()))

    def _config_text(self, allow_tcp_forwarding, extra_config):
        return "\n".join([
            "Port %d" % self.port,
            "ListenAddress %s" % self.host,
            "HostKey %s" % self.host_key,
            "PidFile none",
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding %s" % ("yes" if allow_tcp_forwarding else "no"),
            "X11Forwarding no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            extra_config,
            "",
        ])

    def known_hosts_line(self, host=None, port=None):
        """A known_hosts line for this server's host key as reached at (host, port)."""
        host = host or self.host
        port = port or self.port
        name = host if port == 22 else "[%s]:%d" % (host, port)
        return "%s %s" % (name, " ".join(self.host_public.split()[:2]))

    def write_known_hosts(self, host=None, port=None):
        path = os.path.join(self.dir, "known_hosts.%s.%d" % (host or self.host, port or self.port))
        with open(path, "w") as f:
            f.write(self.known_hosts_line(host, port) + "\n")
        return path

    def ssh_argv(self, *command, host=None, port=None):
        """argv for `ssh` to this server as reached at (host, port), host key checked."""
        host = host or self.host
        port = port or self.port
        return ["ssh", "-F", "/dev/null", "-p", str(port), "-i", self.user_key,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=%s" % self.write_known_hosts(host, port),
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=15",
                "-o", "LogLevel=ERROR", "%s@%s" % (self.user, host), *command]

    def stop(self):
        if self.proc:
            self.proc.stop()


class HttpServer:
    """`python3 -m http.server` bound to (host, a port it picks) serving `files`."""

    def __init__(self, directory, host, files, register=None):
        self.dir = directory
        self.host = host
        os.makedirs(directory, exist_ok=True)
        self.files = dict(files)
        for name, data in self.files.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        self.proc = Proc([sys.executable, "-u", "-m", "http.server", "0", "--bind", host,
                          "--directory", directory], name="http.server")
        if register:
            register(self.proc)
        line = self.proc.wait_line(r"Serving HTTP on \S+ port \d+", timeout=30)
        self.port = int(re.search(r"port (\d+)", line).group(1))

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------------------------------------
# tether processes

class Server:
    """A running `tether server`: its process, address, and what a client needs."""

    def __init__(self, proc, host, port, ca, token_file, directory, config=None):
        self.proc, self.host, self.port = proc, host, port
        self.ca, self.token_file, self.dir, self.config = ca, token_file, directory, config

    @property
    def url(self):
        return "tls://%s" % hostport(self.host, self.port)

    @property
    def token(self):
        with open(self.token_file) as f:
            return f.read().strip()


class Client:
    """A running `tether connect` and the local ports of its mappings, in mapping order."""

    def __init__(self, proc, ports, mappings):
        self.proc, self.ports, self.mappings = proc, ports, mappings

    @property
    def port(self):
        return self.ports[0]


def _mapping_target(spec):
    parts = spec.rsplit(":", 2)
    if len(parts) < 3:
        raise ValueError("not a -L spec: %r" % spec)
    return parts[1], int(parts[2])


LISTENING_TEXT = re.compile(r"^listening (\S+) -> (\S+):(\d+) (tcp|udp)\b")


class TetherTest(unittest.TestCase):
    """Base class: per-test temp dir, process cleanup, fixtures, and logs on failure."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="tether-it-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._procs = []

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        outcome = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for p in getattr(self, "_procs", []):
                sys.stderr.write("\n" + p.output(tail=200) + "\n")
            sys.stderr.flush()
        return outcome

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def _register(self, proc):
        self._procs.append(proc)
        self.addCleanup(proc.stop)
        return proc

    def env(self, **extra):
        env = dict(os.environ)
        env.pop("TETHER_TOKEN", None)
        env.update({k: v for k, v in extra.items() if v is not None})
        return env

    def start(self, argv, name=None, env=None, stdin=None):
        """Starts a process that the test stops in its cleanup."""
        return self._register(Proc(argv, name=name, env=env or self.env(), stdin=stdin))

    def tether(self, *args, name=None, env=None):
        """Starts `tether ARGS...` (with --log-level from TETHER_TEST_LOG_LEVEL)."""
        argv = [tether_bin(), *map(str, args)]
        if LOG_LEVEL and len(args) and args[0] in ("server", "connect"):
            argv += ["--log-level", LOG_LEVEL]
        return self.start(argv, name=name or "tether-%s" % (args[0] if args else ""), env=env)

    @staticmethod
    def _workers_args(extra_args):
        """--workers from TETHER_TEST_SERVER_WORKERS, unless the test chose its own."""
        if not SERVER_WORKERS or "--workers" in extra_args:
            return []
        return ["--workers", SERVER_WORKERS]

    def run_tether(self, *args, timeout=20.0, env=None, input=None):
        """Runs `tether ARGS...` to completion; returns the CompletedProcess (text)."""
        argv = [tether_bin(), *map(str, args)]
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=env or self.env(),
                                  timeout=scaled(timeout), input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("`%s` did not finish within %.1f s\nstdout: %s\nstderr: %s"
                                 % (" ".join(argv), scaled(timeout), e.stdout, e.stderr))

    # -- servers -------------------------------------------------------------------------------

    def dev_server(self, devices=(), extra_args=(), json=True, state_dir=None,
                   listen="127.0.0.1:0"):
        """Starts `tether server --dev` in a temp state dir; devices: {id: address} or
        ["id=address"]. Returns a Server once it printed its listening and dev lines."""
        state_dir = state_dir or self.path("dev-state-%d" % len(self._procs))
        items = devices.items() if isinstance(devices, dict) else [d.split("=", 1) for d in devices]
        args = ["server", "--dev", "--listen", listen, "--state-dir", state_dir]
        for dev_id, address in items:
            args += ["--device", "%s=%s" % (dev_id, address)]
        if json:
            args.append("--json")
        args += self._workers_args(extra_args)
        proc = self.tether(*args, *extra_args, name="tether-server")
        if json:
            ev = proc.json_event("listening", proto="tls")
            host, port = split_hostport(ev["local"])
            dev = proc.json_event("dev")
            ca, token_file = dev.get("ca"), dev.get("token_file")
        else:
            line = proc.wait_line(r"^listening on \S+")
            host, port = split_hostport(line.split()[-1])
            cmd = proc.wait_line(r"^tether connect tls://").split()
            ca = cmd[cmd.index("--ca") + 1]
            token_file = cmd[cmd.index("--token-file") + 1]
        return Server(proc, host, port, ca or os.path.join(state_dir, "ca.crt"),
                      token_file or os.path.join(state_dir, "token"), state_dir)

    def config_server(self, config_text, listen="127.0.0.1:0", extra_args=(), token=None,
                      directory=None, json=True):
        """Writes a TOML config (listen, cert and key first, then `config_text`) with the
        test PKI's server certificate beside it, and starts `tether server --config`.

        `token` is the clear token that goes with a credential in `config_text`; it is
        written to the Server's token_file. Reusing `directory` restarts the same server.
        """
        pki = shared_pki()
        directory = directory or self.path("server-%d" % len(self._procs))
        os.makedirs(directory, exist_ok=True)
        shutil.copy(pki["cert"], os.path.join(directory, "server.crt"))
        shutil.copy(pki["key"], os.path.join(directory, "server.key"))
        config = os.path.join(directory, "tether.toml")
        with open(config, "w") as f:
            f.write("listen = %s\ncert = \"server.crt\"\nkey = \"server.key\"\n\n%s"
                    % (toml_str(listen), config_text))
        token_file = os.path.join(directory, "token")
        if token is not None:
            with open(token_file, "w") as f:
                f.write(token + "\n")
            os.chmod(token_file, 0o600)
        args = ["server", "--config", config]
        if json:
            args.append("--json")
        args += self._workers_args(extra_args)
        proc = self.tether(*args, *extra_args, name="tether-server")
        if json:
            host, port = split_hostport(proc.json_event("listening", proto="tls")["local"])
        else:
            host, port = split_hostport(proc.wait_line(r"^listening on \S+").split()[-1])
        return Server(proc, host, port, pki["ca"], token_file, directory, config)

    # -- clients -------------------------------------------------------------------------------

    def connect(self, server, mappings, extra_args=(), token=None, ca=None, json=True,
                wait_connected=True, env=None):
        """Starts `tether connect` to `server` with `-L` for each mapping ("[BIND:]LPORT:DEV:
        PORT", or (device, port) for "0:device:port") and returns a Client whose ports are
        the local ports from the listening lines, in mapping order."""
        specs = ["0:%s:%d" % m if isinstance(m, tuple) else m for m in mappings]
        args = ["connect", server.url, "--ca", ca or server.ca]
        if token is not None:
            args += ["--token", token]
        else:
            args += ["--token-file", server.token_file]
        for s in specs:
            args += ["-L", s]
        if json:
            args.append("--json")
        proc = self.tether(*args, *extra_args, name="tether-connect", env=env)
        listening = []  # (device, port, local port) in the order printed
        if json:
            def is_listening(line):
                ev = Proc._parse_json(line)
                return ev is not None and ev.get("event") == "listening"
        else:
            is_listening = LISTENING_TEXT.search
        after = 0
        while len(listening) < len(specs):
            _, i, line = proc.wait_for(is_listening, after=after,
                                       what="%d listening lines" % len(specs))
            after = i + 1
            if json:
                ev = jsonlib.loads(line)
                listening.append((ev["device"], int(ev["port"]),
                                  split_hostport(ev["local"])[1]))
            else:
                m = LISTENING_TEXT.search(line)
                listening.append((m.group(2), int(m.group(3)), split_hostport(m.group(1))[1]))
        ports = []
        for spec in specs:
            target = _mapping_target(spec)
            for k, entry in enumerate(listening):
                if entry[:2] == target:
                    ports.append(entry[2])
                    del listening[k]
                    break
            else:
                raise AssertionError("no listening line for %s\n%s" % (spec, proc.output()))
        if wait_connected:
            if json:
                proc.json_event("connected")
            else:
                proc.wait_line(r"connected", stream="both")
        return Client(proc, ports, specs)

    # -- device-side fixtures -------------------------------------------------------------------

    def _service(self, cls, host):
        svc = cls(host)
        self.addCleanup(svc.stop)
        return svc

    def echo_server(self, host):
        return self._service(EchoServer, host)

    def sink_source_server(self, host):
        return self._service(SinkSourceServer, host)

    def half_close_server(self, host):
        return self._service(HalfCloseServer, host)

    def sshd(self, host, allow_tcp_forwarding=True, extra_config=""):
        d = self.path("sshd-%s-%d" % (host, len(self._procs)))
        return Sshd(d, host, allow_tcp_forwarding, extra_config, register=self._register)

    def http_server(self, host, files):
        d = self.path("www-%s-%d" % (host, len(self._procs)))
        return HttpServer(d, host, files, register=self._register)

    def never_read_server(self, host):
        return self._service(NeverReadServer, host)

    # -- UDP -----------------------------------------------------------------------------------

    def udp_echo_server(self, host):
        return self._service(UdpEchoServer, host)

    def udp_sink_server(self, host):
        return self._service(UdpSinkServer, host)

    def socat_udp_echo(self, host):
        """`socat` echoing UDP on (host, a free port): a child process per peer address."""
        svc = SocatUdpEcho(host, register=self._register)
        self.addCleanup(svc.stop)
        return svc

    def dnsmasq(self, host, records):
        """A private dnsmasq on (host, a free port) answering `records` {name: IPv4}."""
        d = self.path("dnsmasq-%s-%d" % (host, len(self._procs)))
        return Dnsmasq(d, host, records, register=self._register)

    def udp_client(self, port, host="127.0.0.1"):
        """A UDP socket of its own (one local source address: one flow) aimed at `port`."""
        c = UdpClient(port, host)
        self.addCleanup(c.close)
        return c

    def connect_mixed(self, server, udp=(), tcp=(), extra_args=(), json=True,
                      wait_connected=True, token=None):
        """Starts `tether connect` with `-U` for each of `udp` and `-L` for each of `tcp`
        ("[BIND:]LPORT:DEV:PORT", or (device, port) for "0:device:port"). Returns a Client
        whose `udp_ports` and `tcp_ports` are the local ports of the listening lines, in
        mapping order (`ports` is udp_ports + tcp_ports)."""
        def spec(m):
            return "0:%s:%d" % m if isinstance(m, tuple) else m
        wanted = [("udp", spec(m)) for m in udp] + [("tcp", spec(m)) for m in tcp]
        args = ["connect", server.url, "--ca", server.ca]
        args += ["--token", token] if token is not None else ["--token-file", server.token_file]
        for proto, s in wanted:
            args += ["-U" if proto == "udp" else "-L", s]
        if json:
            args.append("--json")
        proc = self.tether(*args, *extra_args, name="tether-connect")

        def is_listening(line):
            if not json:
                return LISTENING_TEXT.search(line)
            ev = Proc._parse_json(line)
            return ev is not None and ev.get("event") == "listening"

        listening = []  # (proto, device, port, local port) in the order printed
        after = 0
        while len(listening) < len(wanted):
            _, i, line = proc.wait_for(is_listening, after=after,
                                       what="%d listening lines" % len(wanted))
            after = i + 1
            if json:
                ev = jsonlib.loads(line)
                listening.append((ev.get("proto"), ev["device"], int(ev["port"]),
                                  split_hostport(ev["local"])[1]))
            else:
                m = LISTENING_TEXT.search(line)
                listening.append((m.group(4), m.group(2), int(m.group(3)),
                                  split_hostport(m.group(1))[1]))
        ports = {"udp": [], "tcp": []}
        for proto, s in wanted:
            target = (proto,) + _mapping_target(s)
            for k, entry in enumerate(listening):
                if entry[:3] == target:
                    ports[proto].append(entry[3])
                    del listening[k]
                    break
            else:
                raise AssertionError("no %s listening line for %s\n%s" % (proto, s, proc.output()))
        if wait_connected:
            if json:
                proc.json_event("connected")
            else:
                proc.wait_line(r"connected", stream="both")
        client = Client(proc, ports["udp"] + ports["tcp"], [s for _, s in wanted])
        client.udp_ports, client.tcp_ports = ports["udp"], ports["tcp"]
        return client


# ---------------------------------------------------------------------------------------------
# What a process holds, read from /proc, and a device that never reads

def open_fds(pid):
    """The number of file descriptors process `pid` has open (entries of /proc/PID/fd)."""
    return len(os.listdir("/proc/%d/fd" % pid))


def status_kib(pid, field="VmRSS"):
    """A size field of /proc/PID/status in KiB: VmRSS (resident now), VmHWM (peak
    resident), VmSize, ..."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


class NeverReadServer(TcpService):
    """A device that stalls: accepts connections and reads nothing until start_reading().
    Then each connection reads to its end and records how it ended in stats["end"]: 'eof',
    'reset', or 'open' if still open at the read deadline.

    Its small receive buffer and segment size (taken over by the connections it accepts)
    keep the kernels at both ends from absorbing megabytes per connection, as they would
    on loopback: what a sender writes beyond some tens of KiB stays with the sender, as
    with a device on a slow link.
    """

    name = "never-read"
    RECEIVE_BUFFER = 16 * KiB
    SEGMENT_SIZE = 1024

    def __init__(self, host):
        self._reading = threading.Event()
        self.read_timeout = 10.0
        super().__init__(host)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.SEGMENT_SIZE)

    def start_reading(self, timeout=10.0):
        """Lets every connection read until its peer ends it or `timeout` s (scaled) pass."""
        self.read_timeout = timeout
        self._reading.set()

    def ends(self):
        """How the connections ended so far: a list of 'eof'/'reset'/'open', one per
        connection that finished reading."""
        with self._lock:
            return [st["end"] for st in self.stats if "end" in st]

    def handle(self, conn, stats):
        while not self._reading.wait(0.1):
            if self._stopped:
                return
        deadline = time.monotonic() + scaled(self.read_timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                stats["end"] = "open"
                return
            conn.settimeout(left)
            try:
                b = conn.recv(1 << 20)
            except socket.timeout:
                continue
            except (ConnectionResetError, ConnectionAbortedError):
                stats["end"] = "reset"
                return
            if not b:
                stats["end"] = "eof"
                return
            stats["received"] += len(b)


# ---------------------------------------------------------------------------------------------
# UDP: services on device addresses, local sources, socat, dnsmasq and dig

MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4; tether's wire::max_datagram
UDP_BUFFER = 4 * MiB  # socket buffers of the tests' UDP sockets: whole datagrams in flight


def free_udp_port(host="127.0.0.1"):
    """A UDP port the OS just handed out on `host` (bound to 0, read back, released).

    Only for programs that cannot bind port 0 themselves (socat, dnsmasq); they retry.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _udp_socket(host):
    """A UDP socket with buffers for several 64 KiB datagrams: the kernel drops what does not
    fit, and the tests must not lose datagrams to their own small buffers. Beyond
    net.core.rmem_max only root can go (SO_RCVBUFFORCE); otherwise the capped size stands."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    for plain, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, UDP_BUFFER)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, UDP_BUFFER)
    return s


class UdpService:
    """A UDP service on (host, port 0), served by one thread. Subclasses implement
    reply(data) -> bytes to send back, or None.

    Counters (read them under `lock` or through the methods): datagrams and bytes
    received, datagrams sent, and `sources`: every peer address in the order first seen.
    Through tether each flow reaches the device from its own connected socket, so a new
    source address means a new flow.
    """

    name = "udp service"

    def __init__(self, host):
        self.sock = _udp_socket(host)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)  # how soon the thread notices stop()
        self.host, self.port = self.sock.getsockname()[:2]
        self.lock = threading.Lock()
        self.received = self.bytes_received = self.sent = 0
        self.sources = []
        self._seen = set()
        self.errors = []
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        buf = bytearray(MAX_DATAGRAM + 1)
        while not self._stopped:
            try:
                n, addr = self.sock.recvfrom_into(buf)
            except socket.timeout:
                continue
            except OSError as e:
                if not self._stopped:
                    with self.lock:
                        self.errors.append(repr(e))
                continue
            data = bytes(buf[:n])
            with self.lock:
                self.received += 1
                self.bytes_received += n
                if addr not in self._seen:
                    self._seen.add(addr)
                    self.sources.append(addr)
            out = self.reply(data)
            if out is None:
                continue
            try:
                self.sock.sendto(out, addr)
            except OSError as e:
                with self.lock:
                    self.errors.append(repr(e))
                continue
            with self.lock:
                self.sent += 1

    def reply(self, data):
        raise NotImplementedError

    def flows(self):
        """The number of distinct source addresses seen so far."""
        with self.lock:
            return len(self.sources)

    def count(self):
        """Datagrams received so far."""
        with self.lock:
            return self.received

    def stop(self):
        self._stopped = True
        self._thread.join(5)
        self.sock.close()

    def __repr__(self):
        return "<%s %s>" % (self.name, hostport(self.host, self.port))


class UdpEchoServer(UdpService):
    """Sends every datagram back to its sender, unchanged (an empty one too)."""

    name = "udp echo"

    def reply(self, data):
        return data


class UdpSinkServer(UdpService):
    """Counts datagrams and answers none."""

    name = "udp sink"

    def reply(self, data):
        return None


class SocatUdpEcho:
    """`socat UDP4-LISTEN:PORT,bind=HOST,fork PIPE` on a free port: each new peer address
    gets a child with a socket connected to it, which echoes through a pipe (whole
    datagrams while one is in flight; -b 65536 takes the largest). socat reads an empty
    datagram as end of input: send it none. Children end after 60 s idle or with the parent.
    """

    ACCEPTED = re.compile(r"accepting UDP connection from AF=\d+ (\S+)")

    def __init__(self, host, register=None):
        self.host = host
        for _ in range(5):  # the port can be taken between free_udp_port() and bind
            self.port = free_udp_port(host)
            # its own session (setsid execs in place), so that stop() reaches the children
            self.proc = Proc(["setsid", "socat", "-d", "-d", "-T", "60", "-b", "65536",
                              "UDP4-LISTEN:%d,bind=%s,fork" % (self.port, host), "PIPE"],
                             name="socat")
            if register:
                register(self.proc)
            _, _, line = self.proc.wait_for(r"listening on|Address already in use",
                                            timeout=30, stream="stderr")
            if "listening on" in line:
                return
            self.proc.stop()
        raise AssertionError("socat could not bind a UDP port on %s\n%s"
                             % (host, self.proc.output()))

    def peers(self):
        """The peer addresses socat forked a child for, in order (one per flow)."""
        with self.proc._cond:
            lines = list(self.proc.lines["stderr"])
        return [m.group(1) for m in map(self.ACCEPTED.search, lines) if m]

    def wait_listening(self, timeout=10.0):
        """Waits until the parent listens again after its last fork: a datagram from a new
        peer before that would meet a closed port (ICMP port unreachable)."""
        def listening():
            with self.proc._cond:
                lines = list(self.proc.lines["stderr"])
            return (sum(1 for line in lines if "listening on" in line)
                    > sum(1 for line in lines if self.ACCEPTED.search(line)))
        wait_until(listening, timeout, "socat to listen again")

    def stop(self):
        """Ends the parent and every child it forked (SIGTERM to the session's group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.stop()


class Dnsmasq:
    """A private dnsmasq on (host, a free port) with its own config file: no upstream
    servers, no /etc/hosts, an A record for each of `records` {name: IPv4}, every query
    logged to stderr. It runs in the foreground (--no-daemon) and changes nothing on the
    system."""

    def __init__(self, directory, host, records, register=None):
        self.dir = directory
        self.host = host
        self.records = dict(records)
        os.makedirs(directory, exist_ok=True)
        self.config = os.path.join(directory, "dnsmasq.conf")
        binary = shutil.which("dnsmasq", path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
        if not binary:
            raise RuntimeError("dnsmasq not found (install dnsmasq-base)")
        for _ in range(5):  # the port can be taken between free_udp_port() and bind
            self.port = free_udp_port(host)
            with open(self.config, "w") as f:
                f.write(self._config_text())
            self.proc = Proc([binary, "--no-daemon", "--conf-file=%s" % self.config],
                             name="dnsmasq")
            if register:
                register(self.proc)
            _, _, line = self.proc.wait_for(r"started, version|failed to create|in use",
                                            timeout=30, stream="stderr")
            if "started, version" in line:
                return
            self.proc.stop()
        raise AssertionError("dnsmasq could not bind a port on %s\n%s"
                             % (host, self.proc.output()))

    def _config_text(self):
        lines = ["port=%d" % self.port, "listen-address=%s" % self.host, "bind-interfaces",
                 "no-resolv", "no-hosts", "no-poll", "log-queries", "log-facility=-",
                 "pid-file="]
        lines += ["host-record=%s,%s" % (name, ip) for name, ip in self.records.items()]
        return "\n".join(lines) + "\n"

    def queries(self, name=None):
        """The number of queries it logged (for `name` only, if given)."""
        pattern = re.compile(r"query\[\w+\] %s from" % (re.escape(name) if name else r"\S+"))
        with self.proc._cond:
            return sum(1 for line in self.proc.lines["stderr"] if pattern.search(line))

    def stop(self):
        self.proc.stop()


def dig(port, name, host="127.0.0.1", timeout=3):
    """One `dig` query for the A record of `name` at (host, port), without retries.

    Returns (answers, seconds): the `+short` answer lines and the time dig took. Fails the
    test when dig gets no answer within `timeout` s (scaled, whole seconds for dig).
    """
    wait = max(1, int(round(scaled(timeout))))
    argv = ["dig", "@%s" % host, "-p", str(port), "+tries=1", "+time=%d" % wait, "+short",
            name, "A"]
    start = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=wait + 10)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        raise AssertionError("`%s` failed with code %d after %.2f s:\n%s%s"
                             % (" ".join(argv), r.returncode, seconds, r.stdout, r.stderr))
    return [line for line in r.stdout.splitlines() if line.strip()], seconds


class UdpClient:
    """One local UDP source: a socket of its own on (host, port 0), connected to (host,
    port), so through tether it is one flow."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = _udp_socket(host)
        self.sock.bind((host, 0))
        self.sock.connect((host, port))
        self.address = self.sock.getsockname()[:2]

    def send(self, data):
        self.sock.send(data)

    def recv(self, timeout=5.0):
        """The next datagram (b"" for an empty one), or None after `timeout` s (scaled)."""
        self.sock.settimeout(scaled(timeout))
        try:
            return self.sock.recv(MAX_DATAGRAM + 1)
        except socket.timeout:
            return None

    def drain(self):
        """Reads and returns every datagram already queued, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(MAX_DATAGRAM + 1))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return out

    def echo(self, data, timeout=5.0, tries=1):
        """Sends `data` to an echo service and waits for its reply; resends up to `tries`
        times in all, `timeout` s apart. Returns the reply; fails the test if none comes or
        it differs from `data`."""
        for _ in range(tries):
            self.send(data)
            got = self.recv(timeout)
            if got is not None:
                if got != data:
                    raise AssertionError("echo of %d bytes came back as %d other bytes"
                                         % (len(data), len(got)))
                return got
        raise AssertionError("no echo of a %d-byte datagram from %s within %d x %.1f s"
                             % (len(data), hostport(*self.address), tries, scaled(timeout)))

    def close(self):
        self.sock.close()
