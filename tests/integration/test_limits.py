"""Each limit of the server refuses what is over it, says so by the limit's name, and leaves
what is under it working; freeing a slot lets the next one in.

Sessions over max_sessions_per_credential or max_sessions_per_source get REFUSE code 19
(limit_reached) naming the limit, and `tether connect` retries until a slot is free. Streams
over max_streams_per_credential, max_streams (server-wide) or max_pending_opens_per_session
get OPEN_RESULT code 19 naming the limit (for `tether connect`, a stream_error event with
reason limit_reached); max_streams_per_session refuses with code 11 (too_many_streams). A
source past max_auth_failures_per_source bad tokens within auth_failure_window_ms is closed
at accept until the window has passed, while other sources get in. A flood of refused
connections is logged at most once a second, with a count of the lines left out.

Pending handshakes (per source and in total) and max_queued_bytes are covered by
test_hostile_auth.py and test_hostile_session.py.
"""

import os
import re
import resource
import socket
import ssl
import time
import unittest

import harness
import wire
from harness import KiB

LIMIT_REACHED = 19  # errc::limit_reached on the wire

# Long enough that no raw session (which answers no PING) is closed by the keepalive
# while a test runs.
QUIET_KEEPALIVE = "keepalive_ms = 60000\n"

TCP_SYN_SENT = "02"  # st column of /proc/net/tcp


def log_lines(proc):
    return proc.lines["stdout"] + proc.lines["stderr"]


def proc_net_tcp_hex(host, port):
    """host:port as /proc/net/tcp writes an IPv4 endpoint: the address's bytes in host
    (little-endian) order, then the port, both in upper-case hex."""
    a = socket.inet_aton(host)
    return "%02X%02X%02X%02X:%04X" % (a[3], a[2], a[1], a[0], port)


def connections_in_state(host, port, state):
    """The number of this network namespace's IPv4 TCP sockets connected towards
    host:port in `state` (e.g. TCP_SYN_SENT)."""
    remote = proc_net_tcp_hex(host, port)
    with open("/proc/net/tcp") as f:
        next(f)
        return sum(1 for line in f
                   if line.split()[2] == remote and line.split()[3] == state)


class StalledDevice:
    """A device port where a connection attempt hangs: a listener with a backlog of 0 that
    never accepts, whose one queue slot is taken by a connection of ours. With the accept
    queue full the kernel drops further SYNs, so a dial towards it neither succeeds nor is
    refused until the dialer's own timeout."""

    def __init__(self, host):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(0)
        self.host, self.port = self.listener.getsockname()
        self.filler = socket.create_connection((self.host, self.port),
                                               timeout=harness.scaled(5))

    def close(self):
        self.filler.close()
        self.listener.close()


class LimitsTest(harness.TetherTest):
    """Fixtures: a config server with credentials 'alice' and 'bob' allowed everything, an
    echo device and raw sessions (wire.Conn)."""

    def setUp(self):
        super().setUp()
        if harness.LOG_LEVEL in ("warn", "warning", "error", "critical", "off"):
            raise unittest.SkipTest("refusals are checked in the info log; "
                                    "TETHER_TEST_LOG_LEVEL=%s" % harness.LOG_LEVEL)
        self.echo = self.echo_server(harness.device_addr(90))
        self.tokens = {}
        self.token_files = {}

    def start_server(self, limits, devices=None):
        """A server with `limits` (top-level TOML lines), credentials alice and bob, and
        the echo device plus `devices` {id: address}."""
        text = limits + QUIET_KEEPALIVE + "\n"
        for name in ("alice", "bob"):
            token, digest = harness.new_token()
            self.tokens[name] = token
            text += harness.credential_toml(name, digest, ["*"])
        text += harness.device_toml("echo", self.echo.host)
        for dev_id, address in (devices or {}).items():
            text += harness.device_toml(dev_id, address)
        self.server = self.config_server(text, token=self.tokens["alice"])
        for name, token in self.tokens.items():
            path = os.path.join(self.server.dir, "token-%s" % name)
            with open(path, "w") as f:
                f.write(token + "\n")
            os.chmod(path, 0o600)
            self.token_files[name] = path
        return self.server

    # -- sessions ------------------------------------------------------------------------------

    def raw(self, source=None):
        """A TLS connection to the server (from `source`), closed at cleanup."""
        conn = wire.Conn.to_server(self.server, source=source)
        self.addCleanup(conn.close)
        return conn

    def session(self, who="alice", source=None):
        """A raw session of credential `who`, past HELLO/WELCOME."""
        conn = self.raw(source)
        conn.handshake(self.tokens[who])
        return conn

    def refusal(self, who="alice", source=None, token=None):
        """Sends HELLO on a new connection and returns the REFUSE that answers it; fails
        if the session is welcomed or closed without a REFUSE."""
        conn = self.raw(source)
        conn.send(wire.hello(token or self.tokens[who]))
        frames, how = conn.read_until_closed(timeout=5)
        self.assertIsNone(wire.first_of(frames, wire.WELCOME), frames)
        refuse = wire.first_of(frames, wire.REFUSE)
        self.assertIsNotNone(refuse, "closed (%s) without a REFUSE: %r" % (how, frames))
        return refuse

    def welcomed_soon(self, who="alice", source=None, timeout=10.0):
        """Tries new sessions until one is welcomed (what freed its slot may take a moment
        to reach the server); returns it. Every refusal on the way must be code 19."""
        welcomed = []

        def attempt():
            conn = self.raw(source)
            conn.send(wire.hello(self.tokens[who]))
            f = conn.read_frame(timeout=5)
            if f.type == wire.WELCOME:
                welcomed.append(conn)
                return True
            self.assertEqual((f.type, f.code), (wire.REFUSE, LIMIT_REACHED), f)
            conn.close()
            return False

        harness.wait_until(attempt, timeout, "a session of %s%s to be welcomed"
                           % (who, " from %s" % source if source else ""))
        return welcomed[0]

    # -- streams -------------------------------------------------------------------------------

    def send_open(self, conn, sid, device="echo", port=None):
        conn.send(wire.open_stream(sid, device, port or self.echo.port))

    def open_result(self, conn, sid, timeout=10.0):
        f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT and f.stream_id == sid,
                               timeout=timeout, what="the OPEN_RESULT of stream %d" % sid)
        return f

    def open_stream(self, conn, sid, device="echo", port=None):
        """Opens stream `sid` and returns its OPEN_RESULT."""
        self.send_open(conn, sid, device, port)
        return self.open_result(conn, sid)

    def open_ok(self, conn, sid):
        f = self.open_stream(conn, sid)
        self.assertEqual(f.code, wire.OK, f)

    def open_soon(self, conn, first_sid, timeout=10.0):
        """Opens echo streams first_sid, first_sid + 2, ... until one is accepted (a freed
        slot may take a moment to be given back); returns its id. Every refusal on the way
        must be code 19."""
        sid = [first_sid]
        opened = []

        def attempt():
            f = self.open_stream(conn, sid[0])
            if f.code == wire.OK:
                opened.append(sid[0])
                return True
            self.assertEqual(f.code, LIMIT_REACHED, f)
            sid[0] += 2
            return False

        harness.wait_until(attempt, timeout, "a stream to be accepted")
        return opened[0]

    def echo_on(self, conn, sid, size=8 * KiB):
        """Sends `size` random bytes on stream `sid` of a raw session and fails unless the
        echo device sends them back."""
        payload = os.urandom(size)
        conn.send(wire.data(sid, payload))
        got = b""
        while len(got) < size:
            f, _ = conn.read_until(lambda f: f.stream_id == sid and f.type in
                                   (wire.DATA, wire.RESET), timeout=10,
                                   what="%d echoed bytes on stream %d" % (size - len(got), sid))
            self.assertEqual(f.type, wire.DATA, f)
            got += f.payload
        self.assertEqual(got, payload)

    # -- `tether connect` ----------------------------------------------------------------------

    def client(self, who, wait_connected=True):
        """`tether connect` as `who` with -L 0:echo:PORT, retrying a refused first session
        until it gets in; returns (process, local port)."""
        p = self.tether("connect", self.server.url, "--ca", self.server.ca, "--token-file",
                        self.token_files[who], "-L", "0:echo:%d" % self.echo.port, "--json",
                        "--retry", "forever", name="tether-connect-%s" % who)
        local = harness.split_hostport(p.json_event("listening", timeout=10)["local"])[1]
        if wait_connected:
            p.json_event("connected", timeout=10)
        return p, local

    def expect_stream_error(self, proc, local, limit):
        """A connection to `local` is refused by the server: the client closes it and prints
        a stream_error with reason limit_reached whose message names `limit`."""
        after = proc.mark()
        with socket.create_connection(("127.0.0.1", local), timeout=harness.scaled(10)) as s:
            data, how = harness.recv_until_closed(s, timeout=10)
        self.assertEqual(data, b"")
        ev = proc.json_event("stream_error", after=after, timeout=10)
        self.assertEqual(ev.get("reason"), "limit_reached", ev)
        self.assertIn(limit, ev.get("message", ""), ev)

    # -- the log -------------------------------------------------------------------------------

    def expect_log(self, *words, timeout=5.0):
        """Waits for a server log line holding every one of `words`; returns it."""
        return self.server.proc.wait_line(lambda l: all(w in l for w in words), timeout=timeout,
                                          stream="both")


class SessionLimitsTest(LimitsTest):
    def test_sessions_per_credential(self):
        """With max_sessions_per_credential = 2, alice's third session is refused with code
        19 naming the limit, in the REFUSE and in the server's log; bob still gets in; a
        `tether connect` as alice says why it cannot connect and retries, and gets in once
        one of alice's sessions has ended."""
        self.start_server("max_sessions_per_credential = 2\n")
        first = self.session("alice")
        self.session("alice")

        refuse = self.refusal("alice")
        self.assertEqual(refuse.code, LIMIT_REACHED, refuse)
        self.assertIn("max_sessions_per_credential (2)", refuse.message)
        self.assertIn("alice", refuse.message)
        self.expect_log("refused", "max_sessions_per_credential (2)", "'alice'")

        _, bob_port = self.client("bob")
        harness.echo_roundtrip(bob_port, os.urandom(64 * KiB), timeout=10)

        alice, alice_port = self.client("alice", wait_connected=False)
        ev = alice.json_event("disconnected", timeout=10)
        self.assertIn("max_sessions_per_credential", ev["reason"], ev)
        first.close()
        alice.json_event("connected", timeout=15)
        harness.echo_roundtrip(alice_port, os.urandom(64 * KiB), timeout=10)

    def test_sessions_per_source(self):
        """With max_sessions_per_source = 2, a third session from 127.0.0.20 is refused
        with code 19 naming the limit and the source, in the REFUSE and in the log;
        127.0.0.21 and a `tether connect` from 127.0.0.1 still get in; once one session of
        127.0.0.20 ends, a new one from there is welcomed."""
        self.start_server("max_sessions_per_source = 2\n")
        first = self.session("alice", source="127.0.0.20")
        self.session("bob", source="127.0.0.20")

        refuse = self.refusal("alice", source="127.0.0.20")
        self.assertEqual(refuse.code, LIMIT_REACHED, refuse)
        self.assertIn("max_sessions_per_source (2)", refuse.message)
        self.assertIn("127.0.0.20", refuse.message)
        self.expect_log("refused", "max_sessions_per_source (2)", "127.0.0.20")

        self.session("alice", source="127.0.0.21")
        _, port = self.client("alice")
        harness.echo_roundtrip(port, os.urandom(64 * KiB), timeout=10)

        first.close()
        conn = self.welcomed_soon("alice", source="127.0.0.20")
        self.open_ok(conn, 1)
        self.echo_on(conn, 1)


class StreamLimitsTest(LimitsTest):
    def test_streams_per_session(self):
        """With max_streams_per_session = 3, a session's fourth stream is refused with code
        11 (too_many_streams); the three open streams carry echoes, another session opens
        streams, and once one stream is reset the session opens a new one."""
        self.start_server("max_streams_per_session = 3\n")
        conn = self.session()
        for sid in (1, 3, 5):
            self.open_ok(conn, sid)
        f = self.open_stream(conn, 7)
        self.assertEqual(f.code, wire.TOO_MANY_STREAMS, f)
        for sid in (1, 3, 5):
            self.echo_on(conn, sid)

        other = self.session("bob")
        self.open_ok(other, 1)
        self.echo_on(other, 1)

        conn.send(wire.reset(1, wire.STREAM_RESET, "done"))
        self.open_ok(conn, 9)
        self.echo_on(conn, 9)

    def test_streams_per_session_refusal_is_logged(self):
        """A stream over max_streams_per_session is logged by the server with the limit's
        name, like every other refusal."""
        self.start_server("max_streams_per_session = 1\n")
        conn = self.session()
        self.open_ok(conn, 1)
        f = self.open_stream(conn, 3)
        self.assertEqual(f.code, wire.TOO_MANY_STREAMS, f)
        self.expect_log("refused", "max_streams_per_session (1)", timeout=2)

    def test_streams_per_credential(self):
        """With max_streams_per_credential = 3, alice's fourth stream (on her second
        session) is refused with code 19 naming the limit and the credential, in the
        OPEN_RESULT and in the log, and so is a connection through a `tether connect` as
        alice (stream_error, limit_reached); bob's streams go on; once alice resets one, a
        new one is accepted."""
        self.start_server("max_streams_per_credential = 3\n")
        a1 = self.session("alice")
        a2 = self.session("alice")
        self.open_ok(a1, 1)
        self.open_ok(a1, 3)
        self.open_ok(a2, 1)

        f = self.open_stream(a2, 3)
        self.assertEqual(f.code, LIMIT_REACHED, f)
        self.assertIn("max_streams_per_credential (3)", f.message)
        self.assertIn("alice", f.message)
        self.expect_log("refused", "max_streams_per_credential (3)", "'alice'")

        alice, alice_port = self.client("alice")
        self.expect_stream_error(alice, alice_port, "max_streams_per_credential")

        _, bob_port = self.client("bob")
        harness.echo_roundtrip(bob_port, os.urandom(64 * KiB), timeout=10)
        for conn, sid in ((a1, 1), (a1, 3), (a2, 1)):
            self.echo_on(conn, sid)

        a1.send(wire.reset(1, wire.STREAM_RESET, "done"))
        sid = self.open_soon(a2, 5)
        self.echo_on(a2, sid)

    def test_streams_server_wide(self):
        """With max_streams = 3, alice holding two streams and bob one, bob's next stream
        is refused with code 19 naming max_streams, in the OPEN_RESULT, the log and a
        `tether connect` as bob (stream_error, limit_reached); the open streams carry
        echoes; once alice's session ends, bob opens streams again."""
        self.start_server("max_streams = 3\n")
        a = self.session("alice")
        b = self.session("bob")
        self.open_ok(a, 1)
        self.open_ok(a, 3)
        self.open_ok(b, 1)

        f = self.open_stream(b, 3)
        self.assertEqual(f.code, LIMIT_REACHED, f)
        self.assertIn("max_streams (3)", f.message)
        self.expect_log("refused", "max_streams (3)")

        bob, bob_port = self.client("bob")
        self.expect_stream_error(bob, bob_port, "max_streams (3)")
        for conn, sid in ((a, 1), (a, 3), (b, 1)):
            self.echo_on(conn, sid)

        a.close()
        sid = self.open_soon(b, 5)
        self.echo_on(b, sid)
        harness.echo_roundtrip(bob_port, os.urandom(64 * KiB), timeout=10)

    def test_pending_opens_per_session(self):
        """With max_pending_opens_per_session = 2 and two streams whose device dial hangs,
        the session's third stream is not refused but waits for a dial to end (a burst of
        connections must not fail): no OPEN_RESULT for it while both dials hang; another
        session opens a stream meanwhile; when the two dials time out, the third stream is
        dialed and opens."""
        stalled = StalledDevice(harness.device_addr(91))
        self.addCleanup(stalled.close)
        connect_timeout_ms = 3000
        self.start_server("max_pending_opens_per_session = 2\nconnect_timeout_ms = %d\n"
                          % connect_timeout_ms, devices={"stalled": stalled.host})
        conn = self.session()
        self.send_open(conn, 1, "stalled", stalled.port)
        self.send_open(conn, 3, "stalled", stalled.port)
        harness.wait_until(
            lambda: connections_in_state(stalled.host, stalled.port, TCP_SYN_SENT) >= 2, 5,
            "the server's two dials to the stalled device")

        self.send_open(conn, 5, "echo", self.echo.port)
        other = self.session("alice")
        self.open_ok(other, 1)
        self.echo_on(other, 1)
        early = [f for f in conn.poll_frames(0.5)
                 if f.type == wire.OPEN_RESULT and f.stream_id == 5]
        self.assertEqual(early, [], "stream 5 was answered while both dials were in flight")

        answers = {}
        deadline = connect_timeout_ms / 1000 + 5
        while len(answers) < 3:
            f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT, timeout=deadline)
            answers[f.stream_id] = f.code
        self.assertEqual(answers, {1: wire.TIMED_OUT, 3: wire.TIMED_OUT, 5: 0})
        self.echo_on(conn, 5)

class AuthFailuresTest(LimitsTest):
    WINDOW_MS = 4000

    def refused_at_accept(self, source):
        """True if a TLS connection from `source` is closed by the server before its
        handshake completes; False (and closed) if the handshake completes."""
        try:
            conn = wire.Conn.to_server(self.server, source=source, timeout=5)
        except (ssl.SSLError, ConnectionError, socket.timeout):
            return True
        conn.close()
        return False

    def test_bad_tokens_from_one_source(self):
        """With max_auth_failures_per_source = 3: three bad tokens from 127.0.0.30 are each
        refused (code 6); then connections from 127.0.0.30 are closed at accept, before any
        token, and the log names the limit (never the token); 127.0.0.31 and a
        `tether connect` from 127.0.0.1 still get in; once auth_failure_window_ms has
        passed, 127.0.0.30 gets in again."""
        self.start_server("max_auth_failures_per_source = 3\nauth_failure_window_ms = %d\n"
                          % self.WINDOW_MS)
        bad_token, _ = harness.new_token()
        for _ in range(3):
            refuse = self.refusal(source="127.0.0.30", token=bad_token)
            self.assertEqual(refuse.code, wire.BAD_TOKEN, refuse)

        self.assertTrue(self.refused_at_accept("127.0.0.30"),
                        "a fourth connection from 127.0.0.30 got through its TLS handshake")
        self.expect_log("connection from 127.0.0.30 refused", "max_auth_failures_per_source (3")

        self.session("alice", source="127.0.0.31")
        _, port = self.client("alice")
        harness.echo_roundtrip(port, os.urandom(64 * KiB), timeout=10)

        def back_in():
            if self.refused_at_accept("127.0.0.30"):
                return False
            self.session("alice", source="127.0.0.30")
            return True

        harness.wait_until(back_in, self.WINDOW_MS / 1000 + 5,
                           "127.0.0.30 to get in after the window")
        for line in log_lines(self.server.proc):
            self.assertNotIn(bad_token, line)
            self.assertNotIn(self.tokens["alice"], line)


class RefusalLogTest(LimitsTest):
    FLOOD = 300

    def test_a_flood_of_refused_connections_is_logged_at_a_bounded_rate(self):
        """With max_pending_handshakes_per_source = 1 and one idle connection from
        127.0.0.40 holding it, 300 more connections from there are each closed at accept,
        but the log has at most one refusal line per second; a later line says how many
        were left out, and the lines and their counts add up to the whole flood."""
        self.start_server("max_pending_handshakes_per_source = 1\n"
                          "handshake_timeout_ms = 60000\n")
        server = self.server
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.40", 0))
        holder.connect((server.host, server.port))
        pattern = re.compile(r"connection from 127\.0\.0\.40 refused: "
                             r"max_pending_handshakes_per_source \(1\) reached"
                             r"(?: \((\d+) more like this not logged\))?")
        refused = [0]

        def refused_connection():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.40", 0))
                s.connect((server.host, server.port))
                data, how = harness.recv_until_closed(s, timeout=5)
            self.assertEqual(data, b"")
            refused[0] += 1

        started = time.monotonic()
        for _ in range(self.FLOOD):
            refused_connection()

        def matches():
            return [m for m in map(pattern.search, log_lines(server.proc)) if m]

        def accounted():
            return sum(1 + int(m.group(1) or 0) for m in matches())

        # A line's count of the lines left out before it comes with the next line, a second
        # later at the earliest: keep being refused until the whole flood is accounted for.
        def flood_accounted():
            if accounted() >= self.FLOOD:
                return True
            refused_connection()
            return False

        harness.wait_until(flood_accounted, 5, "log lines that account for the %d refusals"
                           % self.FLOOD)
        lines = [m.group(0) for m in matches()]
        seconds = time.monotonic() - started
        self.assertLessEqual(len(lines), seconds + 2, "%d refusal lines for %d refusals in "
                             "%.1f s" % (len(lines), refused[0], seconds))
        self.assertTrue(any("more like this not logged" in l for l in lines), lines)
        self.assertLessEqual(accounted(), refused[0], lines)

        holder.close()
        _, port = self.client("alice")
        harness.echo_roundtrip(port, os.urandom(64 * KiB), timeout=10)

    def test_a_flood_of_failed_handshakes_is_logged_at_a_bounded_rate(self):
        """300 connections that send bytes that are not TLS each end at once, but the log
        has at most one line per second for them, and later lines count the rest."""
        self.start_server("")
        server = self.server
        pattern = re.compile(r"connection from 127\.0\.0\.41:\d+ dropped: .*?"
                             r"(?: \((\d+) more like this not logged\))?$")

        def garbage_connection():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.41", 0))
                s.connect((server.host, server.port))
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                try:
                    harness.recv_until_closed(s, timeout=5)
                except ConnectionResetError:
                    pass

        started = time.monotonic()
        for _ in range(self.FLOOD):
            garbage_connection()

        def matches():
            return [m for m in map(pattern.search, log_lines(server.proc)) if m]

        def flood_accounted():
            if sum(1 + int(m.group(1) or 0) for m in matches()) >= self.FLOOD:
                return True
            garbage_connection()
            return False

        harness.wait_until(flood_accounted, 5, "log lines that account for the %d dropped "
                           "connections" % self.FLOOD)
        lines = [m.group(0) for m in matches()]
        self.assertLessEqual(len(lines), time.monotonic() - started + 2, lines)
        self.assertTrue(any("more like this not logged" in l for l in lines), lines)


class ClientOpenFilesTest(harness.TetherTest):
    def test_connect_raises_its_open_files_limit(self):
        """Started with a soft open-files limit of 256 (a shell's default is 1,024), `tether
        connect` raises it to the hard limit: 300 connections at once, two descriptors each
        on the client, all go through."""
        echo = self.echo_server(harness.device_addr(44))
        server = self.dev_server(devices={"dev-44": echo.host})
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 4096:
            self.skipTest("the hard open-files limit (%d) leaves nothing to raise" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            client = self.connect(server, [("dev-44", echo.port)])
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with open("/proc/%d/limits" % client.proc.popen.pid) as f:
            line = next(l for l in f if l.startswith("Max open files"))
        self.assertEqual(line.split()[3], "unlimited" if hard == resource.RLIM_INFINITY
                         else str(hard), line)
        harness.run_echo_clients(client.port, 300, 4096)


if __name__ == "__main__":
    unittest.main()
