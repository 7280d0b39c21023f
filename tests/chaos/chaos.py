#!/usr/bin/env python3
"""Chaos run: data keeps moving through tether while everything around it fails.

    chaos.py [--minutes N] [--seed S] [--clients C] [--log-dir DIR]

One `tether connect` (started once, kept running throughout) reaches one
`tether server --dev` through fault_relay.py, our fault-injecting TCP relay, and maps two
local ports to two device services on 127.0.1.x: an echo service and a sink+source service
(tests/integration/harness.py). Client threads open connections through those ports and
move random amounts of deterministic bytes both ways, checking every byte as it arrives and
SHA-256 digests at both ends. Meanwhile a fault schedule, drawn from the seed:

  server_kill    SIGKILL the server, restart it (same --state-dir, same port) a moment later
  server_term    SIGTERM the server (it drains, then exits 0), restart it
  device_crash   crash a device service (every connection it holds is reset), restart it
  stall          the relay stops forwarding for a while (up, down or both ways)
  slow           the relay forwards in small chunks with delays for a while
  cut_rst        the relay resets the tunnel's TCP connection (both sides)
  cut_fin        the relay closes the tunnel's TCP connection in order (both sides)

Every transfer must end in one of two ways: complete, every byte as sent, followed by an
orderly close; or with an error its client saw (a reset, a refused connection, or our own
deadline). A clean end of stream before the expected byte count is a silent truncation and
bytes that differ from those sent are corruption: both are defects of the tunnel.

Devices crash with resets, never with an orderly close: a device that closes in order after
sending fewer bytes than promised looks exactly like a truncating tunnel, through any proxy,
and the tunnel would be right to pass that close on.

After the chaos phase the faults stop and every client thread must complete one more
transfer (the tunnel recovered). Prints `chaos summary: ...` lines and exits 0 only if no
byte was lost silently or corrupted, a transfer completed after every kind of fault, the
client stayed up throughout and no tether process crashed on its own.

Loopback only; every process started here is stopped at the end, also on failure or Ctrl-C.
Environment: TETHER_BIN (the binary under test), TETHER_TEST_TIMEOUT_SCALE (deadlines).
"""

import argparse
import collections
import errno
import hashlib
import json
import math
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import KiB, MiB, scaled  # noqa: E402

ECHO_ADDR = "127.0.1.81"
DATA_ADDR = "127.0.1.82"
FAULT_KINDS = ("server_kill", "server_term", "device_crash", "stall", "slow", "cut_rst",
               "cut_fin")
TRANSFER_TIMEOUT = 120.0   # one transfer, s (scaled): longer than any fault lasts
SERVER_GRACE = 10.0        # the server's default grace period on SIGTERM, s
MAX_CLIENTS = 48           # bounded connections: one per client thread
LIVE_DEFECTS = 10          # defective transfers printed as they happen

_ERRNO_NAMES = {errno.ECONNRESET: "reset", errno.EPIPE: "reset", errno.ECONNABORTED: "reset",
                errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout",
                errno.ENOTCONN: "not connected"}


def now():
    return time.monotonic()


# ---------------------------------------------------------------------------------------------
# Processes

class CommandedProc(harness.Proc):
    """A Proc whose stdin stays open: send() writes one command line. Closing stdin (stop(),
    or our own exit) ends the child: our helpers exit when their stdin closes."""

    def __init__(self, argv, name):
        super().__init__(argv, name=name, stdin=b"")

    def _feed(self, data):
        pass  # keep stdin open for send()

    def send(self, line):
        self.popen.stdin.write((line + "\n").encode())
        self.popen.stdin.flush()

    def command(self, line, timeout=10.0):
        """Sends a command to fault_relay.py and returns its one-line answer."""
        mark = self.mark()
        self.send(line)
        _, _, reply = self.wait_for(r"^(ok|error)\b", timeout=timeout, after=mark)
        if reply.startswith("error"):
            raise RuntimeError("%s: %s -> %s" % (self.name, line, reply))
        return reply

    def stop(self, grace=5.0):
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        if self.popen.poll() is None:
            try:
                self.popen.wait(scaled(grace))
            except subprocess.TimeoutExpired:
                pass  # Proc.stop() sends SIGTERM, then SIGKILL
        return super().stop(grace)


class Device:
    """A device service in a process of its own (`chaos.py --serve-device`), on a fixed
    port after its first start, so that the client's -L specs stay valid across restarts."""

    def __init__(self, kind, host, note):
        self.kind, self.host, self.port = kind, host, 0
        self.proc = None
        self.note = note
        self.incarnations = []

    def start(self):
        for attempt in range(40):
            proc = CommandedProc([sys.executable, "-u", os.path.abspath(__file__),
                                  "--serve-device", self.kind, "--host", self.host,
                                  "--port", str(self.port)],
                                 name="device-%s" % self.kind)
            _, _, line = proc.wait_for(r"^(ready \d+|cannot bind)", timeout=30)
            if line.startswith("ready"):
                self.port = int(line.split()[1])
                self.proc = proc
                self.incarnations.append(proc)
                return
            proc.stop()
            if attempt == 0:
                self.note("device %s: port %d busy, retrying" % (self.kind, self.port))
            if stop_flag.wait(0.25):
                break
        raise RuntimeError("device %s could not bind %s:%d again" % (self.kind, self.host,
                                                                     self.port))

    def crash(self):
        """Every connection the service holds is reset, and its listener closed."""
        self.proc.send("crash")
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc:
            self.proc.stop()


def serve_device(kind, host, port):
    """The body of a device process: a harness service bound to (host, port)."""
    cls = {"echo": harness.EchoServer, "data": harness.SinkSourceServer}[kind]
    try:
        svc = _service_on_port(cls, host, port)
    except OSError as e:
        print("cannot bind %s:%d: %s" % (host, port, e), flush=True)
        return 1
    print("ready %d" % svc.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "crash":
            # Linger 0 on every connection, then exit: the kernel resets them all, as it
            # does for a crashed process that had unread data.
            with svc._lock:
                conns = list(svc._conns)
            for c in conns:
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            os._exit(0)
    svc.stop()  # stdin closed: the chaos run is over (or gone)
    os._exit(0)


def _service_on_port(cls, host, port):
    """An instance of a harness TcpService subclass listening on (host, port)."""
    svc = cls.__new__(cls)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    svc.sock = socket.socket(family, socket.SOCK_STREAM)
    svc.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        svc.sock.bind((host, port))
    except OSError:
        svc.sock.close()
        raise
    svc.sock.listen(1024)
    svc.host, svc.port = svc.sock.getsockname()[:2]
    svc._lock = threading.Lock()
    svc.connections = svc.active = 0
    svc.errors, svc.stats, svc._conns = [], [], set()
    svc._stopped = False
    svc._thread = threading.Thread(target=svc._accept_loop, daemon=True)
    svc._thread.start()
    return svc


class Server:
    """`tether server --dev` in one state directory; restarted on the same port."""

    def __init__(self, state_dir, devices, note):
        self.state_dir, self.devices, self.note = state_dir, devices, note
        self.port = 0
        self.proc = None
        self.ca = self.token_file = None
        self.incarnations = []
        self.expected_exit = True  # False while running: an exit we did not cause is a crash

    def start(self, port=None):
        port = self.port if port is None else port
        args = [harness.tether_bin(), "server", "--dev", "--listen", "127.0.0.1:%d" % port,
                "--state-dir", self.state_dir, "--json"]
        for dev_id, addr in self.devices:
            args += ["--device", "%s=%s" % (dev_id, addr)]
        proc = harness.Proc(args, name="tether-server")
        self.incarnations.append(proc)
        try:
            ev = proc.json_event("listening", proto="tls", timeout=30)
        except AssertionError:
            proc.kill()
            return False
        dev = proc.json_event("dev", timeout=30)
        self.ca, self.token_file = dev["ca"], dev["token_file"]
        self.port = harness.split_hostport(ev["local"])[1]
        self.proc = proc
        self.expected_exit = False
        return True

    def restart(self):
        """Starts again on the same port, retrying while something else holds it briefly.
        Returns True if the port changed (the relay must follow)."""
        deadline = now() + scaled(15)
        while True:
            if self.start():
                return False
            if now() > deadline or stop_flag.wait(0.25):
                break
        self.note("server: port %d stayed busy; restarting on a new port" % self.port)
        if not self.start(port=0):
            raise RuntimeError("the server does not start:\n%s"
                               % self.incarnations[-1].output(tail=40))
        return True

    def crashed(self):
        """The exit code if the server exited without being told to, else None."""
        if self.proc and not self.expected_exit and self.proc.returncode is not None:
            return self.proc.returncode
        return None

    def kill(self):
        self.expected_exit = True
        return self.proc.kill()

    def term(self):
        """SIGTERM; returns (exit code, seconds taken), SIGKILL after grace + 10 s."""
        self.expected_exit = True
        start = now()
        self.proc.popen.send_signal(signal.SIGTERM)
        try:
            code = self.proc.popen.wait(scaled(SERVER_GRACE + 10))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None, now() - start
        self.proc.stop()
        return code, now() - start

    def stop(self):
        self.expected_exit = True
        if self.proc:
            return self.proc.stop(grace=SERVER_GRACE + 5)
        return None


# ---------------------------------------------------------------------------------------------
# Transfers

class Expected:
    """Checks received bytes against a deterministic stream, block by block."""

    def __init__(self, seed, n):
        self.blocks = harness.det_chunks(seed, n)
        self.block = b""
        self.offset = 0      # within self.block
        self.checked = 0     # bytes verified so far
        self.total = n

    def check(self, data):
        """Returns the index in `data` of the first byte that differs, or -1."""
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self.offset == len(self.block):
                self.block = next(self.blocks)
                self.offset = 0
            n = min(len(view) - pos, len(self.block) - self.offset)
            if view[pos:pos + n] != self.block[self.offset:self.offset + n]:
                for i in range(n):
                    if view[pos + i] != self.block[self.offset + i]:
                        return pos + i
            self.offset += n
            self.checked += n
            pos += n
        return -1


class Outcome:
    """How one transfer ended."""

    def __init__(self, tid, worker, kind, up, down):
        self.id, self.worker, self.kind = tid, worker, kind
        self.up, self.down = up, down
        self.status = None        # completed, failed, truncated, corrupted
        self.reason = ""          # for failed: reset, refused, timeout, ...
        self.detail = ""
        self.sent = self.received = 0
        self.expected = 0         # bytes the client should receive in all
        self.lost = 0             # truncated: expected - received
        self.rate = None          # bytes/s each way, None: as fast as it goes
        self.t0 = self.t1 = 0.0

    def describe(self):
        what = ("echo %d bytes" % self.up if self.kind == "echo"
                else "sink+source up %d down %d" % (self.up, self.down))
        if self.rate:
            what += " at %d KiB/s" % (self.rate // KiB)
        return "transfer #%d (client %d, %s): %s%s after %d of %d bytes received, %d sent%s" % (
            self.id, self.worker, what, self.status,
            " (%s)" % self.reason if self.reason else "", self.received, self.expected,
            self.sent, "; " + self.detail if self.detail else "")


def _error_reason(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return _ERRNO_NAMES.get(getattr(e, "errno", None), type(e).__name__)


class _Sender:
    """The bytes a transfer sends: an optional header, then a deterministic stream."""

    def __init__(self, header, seed, n):
        self.blocks = harness.det_chunks(seed, n)
        self.pending = memoryview(header)
        self.header_left = len(header)
        self.payload_sent = 0
        self.total_sent = 0  # header included
        self.total = len(header) + n
        self.hash = hashlib.sha256()

    def next_bytes(self):
        """The bytes to send next (empty when all are sent)."""
        if not self.pending:
            block = next(self.blocks, None)
            if block is None:
                return self.pending
            self.pending = memoryview(block)
        return self.pending

    def sent(self, n):
        done, self.pending = self.pending[:n], self.pending[n:]
        self.total_sent += n
        skip = min(n, self.header_left)
        self.header_left -= skip
        if n > skip:
            self.hash.update(done[skip:])
            self.payload_sent += n - skip


def run_transfer(out, port, seed_a, seed_b, deadline):
    """Runs one exchange through 127.0.0.1:port and fills in `out`.

    echo: sends `up` bytes of det_chunks(seed_a), half-closes, expects the same bytes back,
    then an end of stream. data: sends the sink+source header and `up` bytes of
    det_chunks(seed_a); expects `down` bytes of det_chunks(seed_b), the device's 64-byte
    trailer (SHA-256 of what it sent, of what it received), then an end of stream.
    Every received byte is compared as it arrives; one thread, one socket, no extra threads.
    """
    out.t0 = now()
    echo = out.kind == "echo"
    if echo:
        sender = _Sender(b"", seed_a, out.up)
        expect = Expected(seed_a, out.up)
        out.expected = out.up
    else:
        sender = _Sender(harness.SINK_SOURCE_HEADER.pack(out.up, out.down, seed_b), seed_a,
                         out.up)
        expect = Expected(seed_b, out.down)
        out.expected = out.down + 64
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    except OSError as e:
        out.status, out.reason, out.detail = "failed", _error_reason(e), "connect: %r" % e
        out.t1 = now()
        return out
    try:
        _exchange(out, sock, sender, expect, echo, deadline)
    finally:
        out.sent = sender.payload_sent
        out.t1 = now()
        sock.close()
    return out


def _exchange(out, sock, sender, expect, echo, deadline):
    """Moves the bytes of one transfer both ways at once, at out.rate bytes/s each way
    (None: as fast as it goes). A paced transfer lasts long enough to be in flight when a
    fault strikes, and a paced reader is a slow reader that the tunnel's flow control
    must hold back."""
    sock.setblocking(False)
    recv_hash = hashlib.sha256()
    trailer = bytearray()
    send_error = None
    sending = True
    buf = bytearray(256 * KiB)
    view = memoryview(buf)
    start = now()
    # A paced transfer moves at least a quantum per system call: about 20 per second.
    quantum = 0 if out.rate is None else max(4 * KiB, min(64 * KiB, out.rate // 20))

    def allowance(t):  # bytes each direction may have moved by time t
        return float("inf") if out.rate is None else out.rate * (t - start) + quantum

    registered = selectors.EVENT_READ
    with selectors.DefaultSelector() as sel:
        sel.register(sock, registered)
        while True:
            t = now()
            left = deadline - t
            if left <= 0:
                out.status, out.reason = "failed", "timeout"
                out.detail = "neither an end nor an error within %.0f s" % scaled(TRANSFER_TIMEOUT)
                return
            may = allowance(t)
            # Each direction acts once it may move a quantum (or all that is left).
            read_at = out.received + min(quantum, max(0, out.expected - out.received))
            send_at = sender.total_sent + min(quantum, sender.total - sender.total_sent)
            events = 0
            if read_at <= may:
                events |= selectors.EVENT_READ
            if sending and send_at <= may:
                events |= selectors.EVENT_WRITE
            wait = min(left, 1.0)
            if events and events != registered:
                sel.modify(sock, events)
                registered = events
            elif not events:  # ahead of the pace: nothing to do until the allowance grows
                due = min(read_at, send_at) if sending else read_at
                wait = min(wait, max(0.001, (due - may) / out.rate))
            ready = sel.select(wait) if events else _pause(wait)
            for _, ev in ready:
                if ev & selectors.EVENT_WRITE and sending:
                    data = sender.next_bytes()
                    if not data:
                        sending = False
                        if echo:
                            try:
                                sock.shutdown(socket.SHUT_WR)  # the echo ends after ours
                            except OSError as e:
                                send_error = e
                    else:
                        try:
                            sender.sent(sock.send(data[:max(1, int(min(len(data), may -
                                                                       sender.total_sent)))]))
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError as e:
                            # Keep reading: the error is the client's signal, and what
                            # arrived before it still has to be right.
                            send_error = e
                            sending = False
                if not ev & selectors.EVENT_READ:
                    continue
                want = int(min(len(buf), max(1, may - out.received)))
                try:
                    n = sock.recv_into(view[:want])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    out.status, out.reason = "failed", _error_reason(e)
                    out.detail = "receiving: %r" % e
                    return
                if n == 0:
                    _at_eof(out, sock, sender, send_error, recv_hash, trailer, echo)
                    return
                payload = view[:min(n, expect.total - expect.checked)]
                if len(payload):
                    bad = expect.check(payload)
                    if bad >= 0:
                        out.received += bad
                        out.status = "corrupted"
                        out.detail = "byte %d differs from what was sent" % out.received
                        return
                    recv_hash.update(payload)
                out.received += n
                extra = view[len(payload):n]
                if len(extra):
                    if echo or len(trailer) + len(extra) > 64:
                        out.status = "corrupted"
                        out.detail = "%d bytes more than expected" % (out.received - out.expected)
                        return
                    trailer += extra


def _pause(seconds):
    """Waits out a transfer's pace (traffic shaping, not synchronisation); returns no events."""
    stop_flag.wait(seconds)
    return []


def _at_eof(out, sock, sender, send_error, recv_hash, trailer, echo):
    """Classifies a transfer whose client read an end of stream."""
    if out.received < out.expected:
        if send_error is not None:
            out.status, out.reason = "failed", _error_reason(send_error)
            out.detail = "sending failed (%r), then an end of stream" % send_error
            return
        out.status = "truncated"
        out.lost = out.expected - out.received
        out.detail = "clean end of stream %d bytes short, %s%s" % (
            out.lost, "before we sent a byte" if sender.total_sent == 0
            else "after we sent %d bytes" % sender.total_sent, _after_eof(sock))
        return
    if not echo:
        # The device reports SHA-256 of what it sent and of what it received: the first
        # must be what we checked byte by byte, the second what we sent.
        if bytes(trailer[32:64]) != sender.hash.digest():
            out.status = "corrupted"
            out.detail = "the device received other bytes than were sent (%d up)" % out.up
            return
        if bytes(trailer[:32]) != recv_hash.digest():
            out.status = "corrupted"
            out.detail = "the device's digest of what it sent differs from what arrived"
            return
    if sender.next_bytes():
        out.status, out.reason = "failed", "incomplete"
        out.detail = "the peer ended before taking all we had to send"
        return
    out.status = "completed"


def _after_eof(sock):
    """After a short clean end of stream: had a reset arrived by now as well? For the report
    only: the transfer is a silent truncation either way, since applications stop reading
    at the end of stream (and the kernel reports the end of stream before a later reset)."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return " (a reset followed: %s)" % os.strerror(err) if err else ""


def pick_size(rng, limit):
    """0 now and then, small often, otherwise log-uniform up to `limit`."""
    r = rng.random()
    if r < 0.08:
        return 0
    if r < 0.3:
        return rng.randint(1, 64 * KiB)
    return int(math.exp(rng.uniform(math.log(64 * KiB), math.log(limit))))


# ---------------------------------------------------------------------------------------------
# The checks above can fail: shown against services that misbehave on purpose

def _misbehaving_service(behaviour):
    """A one-connection TCP service on 127.0.0.1 that answers a transfer badly on purpose."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def serve():
        conn, _ = lsock.accept()
        lsock.close()
        with conn:
            if behaviour.startswith("echo"):
                data = harness.recv_exact(conn, 1 << 30)  # to our end of stream
                conn.sendall(data[:len(data) // 2])
                conn.shutdown(socket.SHUT_WR)
                return
            header = harness.recv_exact(conn, harness.SINK_SOURCE_HEADER.size)
            up, down, seed = harness.SINK_SOURCE_HEADER.unpack(header)
            body = b"".join(harness.det_chunks(seed, down))
            trailer = hashlib.sha256(body).digest() + hashlib.sha256(b"").digest()
            if behaviour == "truncate":
                conn.sendall(body[:down // 2])
                conn.shutdown(socket.SHUT_WR)
            elif behaviour == "corrupt":
                conn.sendall(body[:777] + bytes([body[777] ^ 1]) + body[778:] + trailer)
                conn.shutdown(socket.SHUT_WR)
            elif behaviour == "extra":
                conn.sendall(body + trailer + b"x")
                conn.shutdown(socket.SHUT_WR)
            elif behaviour == "reset":
                conn.sendall(body[:down // 2])
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if behaviour != "reset":
                harness.recv_until_closed(conn, timeout=10)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname()[1], t


def self_check():
    """Fails unless run_transfer() tells each kind of bad ending apart."""
    cases = [("truncate", "data", "truncated"), ("corrupt", "data", "corrupted"),
             ("extra", "data", "corrupted"), ("reset", "data", "failed"),
             ("echo-truncate", "echo", "truncated")]
    for behaviour, kind, want in cases:
        port, thread = _misbehaving_service(behaviour)
        out = Outcome(0, 0, kind, 100 * KiB if kind == "echo" else 0, 100 * KiB)
        run_transfer(out, port, 1, 2, now() + scaled(30))
        thread.join(scaled(30))
        if out.status != want:
            raise RuntimeError("self-check: a service that does '%s' gave %s, not %s"
                               % (behaviour, out.describe(), want))
    good = harness.SinkSourceServer("127.0.0.1")
    try:
        out = Outcome(0, 0, "data", 300 * KiB, 200 * KiB)
        run_transfer(out, good.port, 3, 4, now() + scaled(30))
    finally:
        good.stop()
    if out.status != "completed":
        raise RuntimeError("self-check: a good transfer gave " + out.describe())


# ---------------------------------------------------------------------------------------------
# The run

stop_flag = threading.Event()      # set on Ctrl-C / SIGTERM: everything winds down


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.outcomes = []
        self.defects_shown = 0
        self.next_id = 1
        self.faults = []          # dicts: kind, detail, t0, t1
        self.findings = []        # things to report that are not transfers
        self.quiet_since = None   # when the faults stopped
        self.workers_done_quiet = set()
        self.workers_stop = threading.Event()
        self.t_start = now()
        self.tmp = tempfile.mkdtemp(prefix="tether-chaos-")
        self.server = None
        self.relay = None
        self.client = None
        self.devices = {}

    # -- output ----------------------------------------------------------------------------------

    def say(self, text):
        sys.stdout.write("[%7.2f] %s\n" % (now() - self.t_start, text))
        sys.stdout.flush()

    def note(self, text):
        self.say(text)

    def finding(self, text):
        with self.lock:
            self.findings.append(text)
        self.say("DEFECT: " + text)

    # -- setup -------------------------------------------------------------------------------------

    def setup(self):
        self_check()
        self.say("self-check passed: truncation, corruption and resets are told apart")
        self.devices["echo"] = Device("echo", ECHO_ADDR, self.note)
        self.devices["data"] = Device("data", DATA_ADDR, self.note)
        for d in self.devices.values():
            d.start()
        self.server = Server(os.path.join(self.tmp, "state"),
                             [("dev-echo", ECHO_ADDR), ("dev-data", DATA_ADDR)], self.note)
        if not self.server.start(port=0):
            raise RuntimeError("the server did not start:\n%s"
                               % self.server.incarnations[-1].output(tail=40))
        self.relay = CommandedProc([sys.executable, "-u", os.path.join(HERE, "fault_relay.py"),
                                    "--target", "127.0.0.1:%d" % self.server.port, "--verbose"],
                                   name="fault-relay")
        line = self.relay.wait_line(r"^listening ", timeout=30)
        relay_port = harness.split_hostport(line.split()[1])[1]
        specs = ["0:dev-echo:%d" % self.devices["echo"].port,
                 "0:dev-data:%d" % self.devices["data"].port]
        argv = [harness.tether_bin(), "connect", "tls://127.0.0.1:%d" % relay_port,
                "--ca", self.server.ca, "--token-file", self.server.token_file, "--json"]
        for spec in specs:
            argv += ["-L", spec]
        env = dict(os.environ)
        env.pop("TETHER_TOKEN", None)
        self.client = harness.Proc(argv, name="tether-connect", env=env)
        ports = {}
        after = 0
        while len(ports) < 2:
            _, i, line = self.client.wait_for(lambda l: '"listening"' in l, after=after,
                                              timeout=30)
            after = i + 1
            ev = json.loads(line)
            ports[ev["device"]] = harness.split_hostport(ev["local"])[1]
        self.ports = {"echo": ports["dev-echo"], "data": ports["dev-data"]}
        self.client.json_event("connected", timeout=30)
        self.say("server 127.0.0.1:%d, relay 127.0.0.1:%d, client ports %s, devices %s"
                 % (self.server.port, relay_port, self.ports,
                    {k: "%s:%d" % (d.host, d.port) for k, d in self.devices.items()}))
        # Before any fault: the tunnel works at all.
        for kind in ("echo", "data"):
            out = self.transfer(0, kind, random.Random(1), 256 * KiB)
            if out.status != "completed":
                raise RuntimeError("the tunnel does not work before any fault: "
                                   + out.describe())

    # -- transfers -----------------------------------------------------------------------------

    def transfer(self, worker, kind, rng, limit):
        with self.lock:
            tid = self.next_id
            self.next_id += 1
        up = pick_size(rng, limit)
        down = pick_size(rng, limit) if kind == "data" else 0
        if kind == "echo":
            up = max(up, 1)
        out = Outcome(tid, worker, kind, up, down)
        if rng.random() < 0.5:  # paced: in flight for a while, and a slow reader
            out.rate = int(math.exp(rng.uniform(math.log(256 * KiB), math.log(32 * MiB))))
        deadline = now() + scaled(TRANSFER_TIMEOUT)
        run_transfer(out, self.ports[kind], rng.getrandbits(63), rng.getrandbits(63), deadline)
        with self.lock:
            self.outcomes.append(out)
        if out.status in ("truncated", "corrupted"):
            with self.lock:
                self.defects_shown += 1
                shown = self.defects_shown
            if shown <= LIVE_DEFECTS:
                self.say("DEFECT: %s; faults meanwhile: %s"
                         % (out.describe(), self.faults_during(out.t0, out.t1)))
            if shown == LIVE_DEFECTS:
                self.say("(further defective transfers are counted, and listed with --log-dir)")
        elif self.args.verbose or (out.status == "failed" and out.reason == "timeout"):
            self.say(out.describe())
        return out

    def worker(self, i):
        rng = random.Random("%d-client-%d" % (self.args.seed, i))
        while not self.workers_stop.is_set() and not stop_flag.is_set():
            kind = "echo" if rng.random() < 0.35 else "data"
            try:
                out = self.transfer(i, kind, rng, self.args.max_size)
            except Exception as e:  # a defect of this test: say so, don't hide it
                self.finding("client thread %d failed: %r\n%s" % (i, e, traceback.format_exc()))
                return
            if (out.status == "completed" and self.quiet_since is not None
                    and out.t0 >= self.quiet_since):
                with self.lock:
                    self.workers_done_quiet.add(i)
                return  # recovered; the others finish theirs without competition
            # A pause between transfers keeps the machine usable for others; paced transfers
            # keep connections in flight whenever a fault strikes.
            self.workers_stop.wait(rng.uniform(0, 0.1))

    # -- faults --------------------------------------------------------------------------------

    def faults_during(self, t0, t1):
        """The faults under way between t0 (less a second) and t1, as text."""
        with self.lock:
            hits = [f for f in self.faults if f["t0"] <= t1 and f["t1"] >= t0 - 1.0]
        return ", ".join("%s %s at %.2f" % (f["kind"], f["detail"] or "(under way)",
                                            f["t0"] - self.t_start) for f in hits) or "none"

    def begin(self, kind):
        """Registers a fault as under way from now (so transfers it hurts can name it)."""
        f = {"kind": kind, "detail": "", "t0": now(), "t1": float("inf")}
        with self.lock:
            self.faults.append(f)
        return f

    def record(self, f, detail):
        with self.lock:
            f["detail"], f["t1"] = detail, now()
        self.say("fault %s %s (%.2f s)" % (f["kind"], detail, f["t1"] - f["t0"]))

    def check_processes(self):
        code = self.server.crashed()
        if code is not None:
            self.finding("tether server exited by itself with code %s:\n%s"
                         % (code, self.server.proc.output(tail=30)))
            self.server.expected_exit = True
            self.restart_server()
        if self.client.returncode is not None:
            self.finding("tether connect exited with code %s during the run:\n%s"
                         % (self.client.returncode, self.client.output(tail=30)))
            return False
        return True

    def restart_server(self):
        if self.server.restart():
            self.relay.command("target 127.0.0.1:%d" % self.server.port)

    def wait_reconnected(self, mark, what):
        """Waits for the client's next session after a server restart, so that the next
        fault does not land before the tunnel could recover from this one."""
        try:
            self.client.json_event("connected", after=mark, timeout=60)
        except AssertionError:
            self.finding("tether connect did not reconnect within %.0f s after %s"
                         % (scaled(60), what))

    def inject(self, kind):
        rng = self.rng
        mark = self.client.mark()
        f = self.begin(kind)
        if kind == "server_kill":
            self.server.kill()
            down = rng.uniform(0.1, 3.0)
            stop_flag.wait(down)
            self.restart_server()
            self.record(f, "down %.1f s" % down)
            self.wait_reconnected(mark, kind)
        elif kind == "server_term":
            code, took = self.server.term()
            if code is None:
                self.finding("tether server ignored SIGTERM for %.0f s (killed); seed %d"
                             % (took, self.args.seed))
            elif code != 0:
                self.finding("tether server exited with code %s after SIGTERM" % code)
            down = rng.uniform(0.1, 2.0)
            stop_flag.wait(down)
            self.restart_server()
            self.record(f, "stopped in %.1f s (exit %s), down %.1f s" % (took, code, down))
            self.wait_reconnected(mark, kind)
        elif kind == "device_crash":
            which = rng.choice(["echo", "data", "both"])
            for name in (("echo", "data") if which == "both" else (which,)):
                self.devices[name].crash()
            down = rng.uniform(0.1, 2.0)
            stop_flag.wait(down)
            for name in (("echo", "data") if which == "both" else (which,)):
                self.devices[name].start()
            self.record(f, "%s, down %.1f s" % (which, down))
        elif kind == "stall":
            direction = rng.choice(["up", "down", "both"])
            seconds = rng.uniform(0.3, 6.0)
            self.relay.command("stall %s %.3f" % (direction, seconds))
            stop_flag.wait(seconds)
            self.record(f, "%s %.1f s" % (direction, seconds))
        elif kind == "slow":
            direction = rng.choice(["up", "down", "both"])
            seconds = rng.uniform(1.0, 6.0)
            chunk = rng.choice([512, 2048, 8192])
            delay_ms = rng.uniform(2, 30)
            self.relay.command("slow %s %.3f %d %.1f" % (direction, seconds, chunk, delay_ms))
            stop_flag.wait(seconds)
            self.record(f, "%s %.1f s, %d bytes per %.0f ms" % (direction, seconds, chunk,
                                                                   delay_ms))
        elif kind in ("cut_rst", "cut_fin"):
            self.relay.command("cut %s" % kind[4:])
            self.record(f, "both sides")
            self.wait_reconnected(mark, kind)
        else:
            raise ValueError(kind)

    def run_faults(self, until):
        bag = []
        while now() < until and not stop_flag.is_set():
            if not self.check_processes():
                return
            gap = self.rng.uniform(1.0, 4.0)
            if stop_flag.wait(gap) or now() >= until:
                return
            if not self.check_processes():
                return
            if not bag:  # every kind once per round, in a random order
                bag = list(FAULT_KINDS)
                self.rng.shuffle(bag)
            self.inject(bag.pop())

    # -- the whole run -------------------------------------------------------------------------

    def run(self):
        self.setup()
        n = self.args.clients
        threads = [threading.Thread(target=self.worker, args=(i,), name="client-%d" % i,
                                    daemon=True) for i in range(1, n + 1)]
        for t in threads:
            t.start()
        self.say("chaos for %.1f minutes with %d client threads, seed %d"
                 % (self.args.minutes, n, self.args.seed))
        self.run_faults(self.t_start + self.args.minutes * 60)
        self.quiet_since = now()
        self.say("faults stopped; every client thread must now complete a transfer")
        deadline = now() + scaled(TRANSFER_TIMEOUT + 60)
        while now() < deadline and not stop_flag.is_set():
            with self.lock:
                done = len(self.workers_done_quiet)
            if done == n or not self.check_processes():
                break
            stop_flag.wait(0.2)
        self.workers_stop.set()
        for t in threads:
            t.join(scaled(TRANSFER_TIMEOUT + 10))
        with self.lock:
            recovered = len(self.workers_done_quiet)
        if recovered < n:
            self.finding("after the faults stopped, only %d of %d client threads completed "
                         "a transfer within %.0f s" % (recovered, n,
                                                      scaled(TRANSFER_TIMEOUT + 60)))
        self.check_processes()
        self.stats = self.relay.command("stats")
        self.stop_tether()
        return self.report()

    def stop_tether(self):
        """SIGTERM to the client, then the server: both must exit 0 within their drain time."""
        code = self.client.stop(grace=20)
        if code != 0:
            self.finding("tether connect exited with code %s on SIGTERM at the end" % code)
        code = self.server.stop()
        if code != 0:
            self.finding("tether server exited with code %s on SIGTERM at the end" % code)

    # -- the end -------------------------------------------------------------------------------

    def recovered(self, i):
        """Whether a transfer that started after fault i ended completed before the next
        fault began (or, for the last fault, at all)."""
        f = self.faults[i]
        nxt = self.faults[i + 1]["t0"] if i + 1 < len(self.faults) else float("inf")
        return any(o.status == "completed" and o.t0 >= f["t1"] and o.t1 <= nxt
                   for o in self.outcomes)

    def report(self):
        outs = self.outcomes
        by_status = collections.Counter(o.status for o in outs)
        failed_by = collections.Counter(o.reason for o in outs if o.status == "failed")
        moved = sum(o.sent + o.received for o in outs if o.status == "completed")
        lost = sum(o.lost for o in outs if o.status == "truncated")
        corrupted = by_status["corrupted"]
        kinds = collections.Counter(f["kind"] for f in self.faults)
        recovered = collections.Counter(f["kind"] for i, f in enumerate(self.faults)
                                        if self.recovered(i))
        details = collections.defaultdict(collections.Counter)
        for f in self.faults:
            if f["kind"] in ("stall", "slow", "device_crash"):
                details[f["kind"]][f["detail"].split()[0].rstrip(",")] += 1
        reconnects = len(self.client.json_events("connected")) - 1
        stream_errors = collections.Counter(ev.get("reason")
                                            for ev in self.client.json_events("stream_error"))
        truncated = [o for o in outs if o.status == "truncated"]
        at_zero = sum(1 for o in truncated if o.received == 0)

        def kind_text(k):
            extra = ""
            if details[k]:
                extra = " (%s)" % ", ".join("%s %d" % kv for kv in sorted(details[k].items()))
            return "%s %d%s" % (k, kinds[k], extra)

        p = lambda text: print("chaos summary: " + text)
        print()
        p("seed %d, %.1f minutes, %d client threads, tether %s"
          % (self.args.seed, self.args.minutes, self.args.clients, harness.tether_bin()))
        p("faults injected: %s; total %d" % (", ".join(kind_text(k) for k in FAULT_KINDS),
                                             len(self.faults)))
        p("recovered (a transfer started after the fault completed before the next one): %s"
          % ", ".join("%s %d/%d" % (k, recovered[k], kinds[k]) for k in FAULT_KINDS))
        p("transfers started %d, completed %d, failed %d (%s), silently truncated %d "
          "(%d before their first byte, %d later), corrupted %d"
          % (len(outs), by_status["completed"], by_status["failed"],
             ", ".join("%s %d" % kv for kv in sorted(failed_by.items())) or "none",
             len(truncated), at_zero, len(truncated) - at_zero, corrupted))
        p("bytes moved %d (%.1f MiB, completed transfers, both directions); bytes lost "
          "silently %d; corrupted transfers %d" % (moved, moved / MiB, lost, corrupted))
        p("client sessions %d (reconnected %d times), stream errors it reported: %s; server "
          "started %d times; relay %s"
          % (reconnects + 1, reconnects,
             ", ".join("%s %d" % kv for kv in sorted(stream_errors.items())) or "none",
             len(self.server.incarnations), self.stats[3:] if self.stats else "?"))
        problems = []
        if lost or by_status["truncated"]:
            problems.append("%d transfers silently truncated (%d bytes)"
                            % (by_status["truncated"], lost))
        if corrupted:
            problems.append("%d transfers corrupted" % corrupted)
        missing = [k for k in FAULT_KINDS if recovered[k] == 0]
        if missing:
            problems.append("no transfer completed after: %s" % ", ".join(missing))
        problems.extend(self.findings)
        bad = [o for o in outs if o.status in ("truncated", "corrupted")]
        shown = 20
        for o in bad[:shown]:
            p("defect: %s; faults meanwhile: %s" % (o.describe(), self.faults_during(o.t0, o.t1)))
        if len(bad) > shown:
            p("defect: ... and %d more such transfers" % (len(bad) - shown))
        for text in self.findings:
            p("defect: " + text.splitlines()[0])
        if problems:
            p("FAILED: %s. Reproduce with: tests/chaos/chaos.py --minutes %g --seed %d"
              % ("; ".join(t.splitlines()[0] for t in problems), self.args.minutes,
                 self.args.seed))
            return 1
        p("OK: every transfer completed or failed with an error its client saw")
        return 0

    def save_logs(self, directory):
        os.makedirs(directory, exist_ok=True)
        procs = [("client", self.client), ("relay", self.relay)] if self.client else []
        procs += [("server-%d" % i, p) for i, p in enumerate(
            self.server.incarnations if self.server else [], 1)]
        for name, d in self.devices.items():
            procs += [("device-%s-%d" % (name, i), p) for i, p in enumerate(d.incarnations, 1)]
        for name, proc in procs:
            if proc is None:
                continue
            with open(os.path.join(directory, name + ".log"), "w") as f:
                f.write(proc.output(tail=0) + "\n")
        with open(os.path.join(directory, "transfers.log"), "w") as f:
            for o in self.outcomes:
                f.write("%.2f %.2f %s\n" % (o.t0 - self.t_start, o.t1 - self.t_start,
                                            o.describe()))
            for fa in self.faults:
                f.write("fault %.2f %.2f %s %s\n" % (fa["t0"] - self.t_start,
                                                    fa["t1"] - self.t_start, fa["kind"],
                                                    fa["detail"]))

    def teardown(self):
        """Stops everything this run started, the client first (it must exit 0)."""
        if self.client:
            self.client.stop(grace=15)
        if self.server:
            self.server.stop()
        if self.relay:
            self.relay.stop()
        for d in self.devices.values():
            d.stop()
        shutil.rmtree(self.tmp, True)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Chaos run: transfers through tether while the server, the devices and "
                    "the link fail.")
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the chaos phase")
    ap.add_argument("--seed", type=int, default=None, help="seed of the fault schedule and "
                    "the transfers (printed; default: random)")
    ap.add_argument("--clients", type=int, default=8,
                    help="client threads, each with one connection at a time (max %d)"
                    % MAX_CLIENTS)
    ap.add_argument("--max-size", type=int, default=4 * MiB,
                    help="largest transfer per direction, bytes")
    ap.add_argument("--log-dir", help="write every process's output and the transfer log here")
    ap.add_argument("--verbose", action="store_true", help="print every transfer")
    ap.add_argument("--serve-device", choices=["echo", "data"], help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_device:
        return serve_device(args.serve_device, args.host, args.port)
    if not 1 <= args.clients <= MAX_CLIENTS:
        ap.error("--clients must be 1 to %d" % MAX_CLIENTS)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    if not os.access(harness.tether_bin(), os.X_OK):
        sys.stderr.write("chaos: no tether binary at %s (set TETHER_BIN)\n" % harness.tether_bin())
        return 2

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    chaos = Chaos(args)
    code = 1
    try:
        code = chaos.run()
    except KeyboardInterrupt:
        stop_flag.set()
        chaos.workers_stop.set()
        print("chaos summary: interrupted; stopping everything", flush=True)
        code = 130
    except Exception as e:  # setup problems: report them, then clean up
        stop_flag.set()
        chaos.workers_stop.set()
        print("chaos summary: FAILED: %s" % e, flush=True)
        code = 1
    finally:
        stop_flag.set()
        chaos.workers_stop.set()
        if args.log_dir:
            chaos.save_logs(args.log_dir)
        elif code not in (0, 130) and chaos.client:
            for proc in (chaos.client, chaos.server.proc if chaos.server else None):
                if proc is not None:
                    sys.stdout.write(proc.output(tail=40) + "\n")
        chaos.teardown()
    return code


if __name__ == "__main__":
    sys.exit(main())
