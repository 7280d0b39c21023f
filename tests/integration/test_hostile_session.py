"""A client with a valid token that breaks the protocol on purpose harms nobody but itself.

A GOAWAY from a client does not freeze the server; the device sockets of a session close
when it ends, however it ends; a client that sends without reading its answers is stopped
from reading and cut off instead of filling the server's memory; and every frame that breaks
the protocol ends the offending session with a GOAWAY that says what was wrong (handshake
frames with a REFUSE), while other sessions go on.

These tests play the hostile client with tests/integration/wire.py.
"""

import os
import signal
import socket
import ssl
import time
import unittest

import harness
import wire
from harness import KiB, MiB


def allow_all_config(token_digest, devices, extra=""):
    """A server config: `extra` top-level keys, one credential allowed everything, and
    the devices {id: address}."""
    text = extra + "\n" + harness.credential_toml("hostile", token_digest, ["*"])
    for dev_id, address in devices.items():
        text += harness.device_toml(dev_id, address)
    return text


class HostileTest(harness.TetherTest):
    """Fixtures: a hostile session (wire.Conn), and a well-behaved `tether connect` whose
    deadlines are short enough for a frozen server to fail the test, not hang it."""

    def start_client(self, server, device, port, timeout=10.0):
        """`tether connect` with one mapping; returns the local port once connected."""
        p = self.tether("connect", server.url, "--ca", server.ca, "--token-file",
                        server.token_file, "-L", "0:%s:%d" % (device, port), "--json",
                        name="tether-connect")
        local = harness.split_hostport(p.json_event("listening", timeout=timeout)["local"])[1]
        p.json_event("connected", timeout=timeout)
        return local

    def hostile(self, server, token, **kw):
        """A wire.Conn past HELLO/WELCOME; closed by the test's cleanup."""
        conn = wire.Conn.to_server(server, **kw)
        self.addCleanup(conn.close)
        return conn, conn.handshake(token)


# ---------------------------------------------------------------------------------------------
# Bug 1: a GOAWAY from a client

class ClientGoawayTest(HostileTest):
    GRACE_MS = 1000

    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(81))
        self.token, digest = harness.new_token()
        self.server = self.config_server(
            allow_all_config(digest, {"echo": self.echo.host},
                             "grace_period_ms = %d\n" % self.GRACE_MS),
            token=self.token)

    def test_goaway_from_a_client_leaves_the_server_serving(self):
        """After a client's GOAWAY the server still serves: a new `tether connect` session
        carries an echo round trip, and the GOAWAY's connection stays open with no stream
        opened towards it."""
        conn, _ = self.hostile(self.server, self.token)
        conn.send(wire.goaway(0, wire.GOING_AWAY, "bye"))

        local = self.start_client(self.server, "echo", self.echo.port)
        harness.echo_roundtrip(local, os.urandom(64 * KiB), timeout=10)

        frames, how = conn.read_until_closed(timeout=1, fail_if_open=False)
        self.assertEqual(how, "open", "the server closed the connection that sent GOAWAY: %r"
                         % frames)
        self.assertIsNone(wire.first_of(frames, wire.OPEN), frames)

    def test_sigterm_after_a_client_goaway_stops_the_server(self):
        """A client's GOAWAY does not keep the server from stopping: SIGTERM ends it with
        exit code 0 within its grace period plus a few seconds."""
        conn, _ = self.hostile(self.server, self.token)
        conn.send(wire.goaway(0, wire.GOING_AWAY, "bye"), wire.ping(7))
        try:  # the ACK shows the GOAWAY was handled; a frozen server is caught below
            conn.read_until(lambda f: f.type == wire.PING and f.ack, timeout=3)
        except (AssertionError, wire.Closed):
            pass
        self.server.proc.popen.send_signal(signal.SIGTERM)
        code = self.server.proc.wait(timeout=self.GRACE_MS / 1000 + 5)
        self.assertEqual(code, 0, self.server.proc.output())


# ---------------------------------------------------------------------------------------------
# Bug 2: streams end with their session

class StreamsEndWithTheirSessionTest(HostileTest):
    STREAMS = 40
    PER_STREAM = 1 * MiB

    def setUp(self):
        super().setUp()
        self.device = self.never_read_server(harness.device_addr(82))
        self.token, digest = harness.new_token()
        self.server = self.config_server(
            allow_all_config(digest, {"sink": self.device.host}, "grace_period_ms = 1000\n"),
            token=self.token)

    def fill_streams(self, conn, welcome, ids):
        """Sends up to PER_STREAM bytes on each stream, within the session window the
        server grants; stops early once no session credit has come back for a second
        (what the device does not read holds it). Returns the bytes sent."""
        credit = welcome.session_window
        per_stream = min(self.PER_STREAM, welcome.stream_window)
        sent = {i: 0 for i in ids}
        block = os.urandom(wire.MAX_DATA_PAYLOAD)
        total = 0
        while True:
            batch = []
            for i in ids:
                n = min(len(block), per_stream - sent[i], credit)
                if n > 0:
                    batch.append(wire.data(i, block[:n]))
                    sent[i] += n
                    credit -= n
                    total += n
            if batch:
                conn.send(*batch)
            if all(v >= per_stream for v in sent.values()):
                return total
            patience = time.monotonic() + 1.0
            while credit < len(block):
                left = patience - time.monotonic()
                if left <= 0:
                    return total
                for f in conn.poll_frames(timeout=left):
                    if f.type == wire.WINDOW_UPDATE and f.stream_id == 0:
                        credit += f.increment
                    elif f.type in (wire.RESET, wire.GOAWAY):
                        self.fail("the server ended a stream while it was filled: %r" % f)

    def test_device_sockets_close_when_the_session_is_cut(self):
        """A client that fills 40 streams to a device that never reads and then drops its
        connection (TCP reset) leaves nothing behind: within 10 s the server holds no more
        file descriptors than before it came, and the device sees each of its 40
        connections closed or reset."""
        pid = self.server.proc.pid
        before = harness.open_fds(pid)
        conn, welcome = self.hostile(self.server, self.token)
        ids = [1 + 2 * k for k in range(self.STREAMS)]
        conn.send(*[wire.open_stream(i, "sink", self.device.port) for i in ids])
        pending = set(ids)
        while pending:
            f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT, timeout=10,
                                   what="%d more OPEN_RESULTs" % len(pending))
            self.assertEqual(f.code, wire.OK, f)
            pending.discard(f.stream_id)
        harness.wait_until(lambda: self.device.connections == self.STREAMS, 10,
                           "the device to accept %d connections" % self.STREAMS)
        sent = self.fill_streams(conn, welcome, ids)
        self.assertGreater(sent, self.STREAMS * 64 * KiB)

        conn.close_abruptly()
        try:
            harness.wait_until(lambda: harness.open_fds(pid) <= before + 2, 10,
                               "the server's file descriptors to come back to %d (+2)" % before)
        except AssertionError as e:
            raise AssertionError("%s; it holds %d after %d bytes were sent"
                                 % (e, harness.open_fds(pid), sent)) from None

        self.device.start_reading(timeout=10)
        harness.wait_until(lambda: len(self.device.ends()) == self.STREAMS, 15,
                           "the device's %d connections to end" % self.STREAMS)
        ends = self.device.ends()
        self.assertNotIn("open", ends, "%d of the device's connections still open, %d closed, "
                         "%d reset" % (ends.count("open"), ends.count("eof"), ends.count("reset")))


# ---------------------------------------------------------------------------------------------
# Bug 3: what is queued towards a client is bounded

class PingFloodTest(HostileTest):
    KEEPALIVE_MS = 1000
    MAX_PINGS = 2_000_000
    STALL_S = 3.0

    def env(self, **extra):
        # Under ASan freed memory would stay resident in the quarantine.
        env = super().env(**extra)
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"),
                                                    "quarantine_size_mb=1") if x)
        return env

    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(83))
        self.token, digest = harness.new_token()
        self.server = self.config_server(
            allow_all_config(digest, {"echo": self.echo.host},
                             "keepalive_ms = %d\n" % self.KEEPALIVE_MS),
            token=self.token)

    def flood(self, conn):
        """Sends PINGs without reading until a write makes no progress for STALL_S s, the
        connection fails, or MAX_PINGS are sent. Returns (pings sent, why it stopped)."""
        per_batch = 4096
        batch = b"".join(wire.ping(n) for n in range(per_batch))
        sent = 0
        conn.sock.settimeout(harness.scaled(self.STALL_S))
        while sent < self.MAX_PINGS:
            try:
                conn.sock.sendall(batch)
            except (socket.timeout, ssl.SSLWantWriteError):
                return sent, "stalled"
            except (OSError, ssl.SSLError) as e:
                return sent, "closed: %r" % e
            sent += per_batch
        return sent, "all sent"

    def test_a_client_that_never_reads_is_bounded_and_cut_off(self):
        """PINGs from a client that never reads its ACKs: the server stops reading from it
        (the client's writes stall), its memory grows by less than 64 MiB, another session
        keeps working, and the flooding session is closed by the server within three
        keepalive intervals (plus slack) after the flood stopped."""
        local = self.start_client(self.server, "echo", self.echo.port)
        harness.echo_roundtrip(local, os.urandom(64 * KiB), timeout=10)
        pid = self.server.proc.pid
        rss_before = harness.status_kib(pid, "VmRSS")

        conn, _ = self.hostile(self.server, self.token)
        sent, why = self.flood(conn)
        stopped = time.monotonic()
        self.assertNotEqual(why, "all sent", "the server read all %d PINGs of a client that "
                            "reads nothing" % sent)

        harness.echo_roundtrip(local, os.urandom(64 * KiB), timeout=10)

        # The server is to close the flooding connection within three keepalive intervals.
        # Watched through TCP_INFO, so that nothing is read from it meanwhile; then what
        # it had queued may still be in flight behind our full receive buffer: read that
        # (raw, undecoded), and its end must follow.
        deadline = stopped + harness.scaled(3 * self.KEEPALIVE_MS / 1000 + 2)
        while time.monotonic() < deadline and conn.tcp_state() == wire.TCP_ESTABLISHED:
            time.sleep(0.05)
        try:
            conn.drain_until_closed(timeout=2)
        except AssertionError as e:
            raise AssertionError("the server did not close the flooding connection within "
                                 "3 keepalive intervals: %s (%d PINGs sent, %s)"
                                 % (e, sent, why)) from None

        grown_mib = (harness.status_kib(pid, "VmHWM") - rss_before) / 1024
        self.assertLess(grown_mib, 64, "peak RSS grew by %.0f MiB; %d PINGs sent, %s"
                        % (grown_mib, sent, why))


# ---------------------------------------------------------------------------------------------
# Bug 7: strict protocol

class StrictProtocolTest(HostileTest):
    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(84))
        closed_host = harness.device_addr(85)
        self.closed_port = harness.free_port(closed_host)  # nothing listens there
        self.token, digest = harness.new_token()
        self.server = self.config_server(
            allow_all_config(digest, {"echo": self.echo.host, "closed": closed_host}),
            token=self.token)
        self.local = self.start_client(self.server, "echo", self.echo.port)

    def tearDown(self):
        # Whatever a case did, the well-behaved session still works.
        if self.server.proc.running():
            harness.echo_roundtrip(self.local, os.urandom(64 * KiB), timeout=10)
        super().tearDown()

    def session(self):
        conn, _ = self.hostile(self.server, self.token)
        return conn

    def open_echo(self, conn, stream_id):
        conn.send(wire.open_stream(stream_id, "echo", self.echo.port))
        f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT, timeout=10)
        self.assertEqual((f.stream_id, f.code), (stream_id, wire.OK), f)

    def expect_goaway(self, conn, words):
        """The server answers with GOAWAY(protocol error) naming `words`, then closes."""
        frames, how = conn.read_until_closed(timeout=3)
        goaway = wire.first_of(frames, wire.GOAWAY)
        self.assertIsNotNone(goaway, "closed (%s) without a GOAWAY; frames: %r" % (how, frames))
        self.assertEqual(goaway.code, wire.PROTOCOL_ERROR, goaway)
        self.assertIn(words, goaway.message)
        self.assertIsNone(wire.first_of(frames, wire.WELCOME))

    def expect_refuse(self, conn, code, words):
        """The server answers the handshake with REFUSE(code) naming `words`, then closes."""
        frames, how = conn.read_until_closed(timeout=3)
        self.assertIsNone(wire.first_of(frames, wire.WELCOME), frames)
        refuse = wire.first_of(frames, wire.REFUSE)
        self.assertIsNotNone(refuse, "closed (%s) without a REFUSE; frames: %r" % (how, frames))
        self.assertEqual(refuse.code, code, refuse)
        self.assertIn(words, refuse.message)

    def raw(self):
        conn = wire.Conn.to_server(self.server)
        self.addCleanup(conn.close)
        return conn

    # -- frames after the handshake ------------------------------------------------------------

    def test_data_on_a_stream_never_opened(self):
        """DATA on stream 99, which the client never opened, ends the session: "never
        opened"."""
        conn = self.session()
        conn.send(wire.data(99, b"who is there"))
        self.expect_goaway(conn, "never opened")

    def test_data_before_open_result(self):
        """DATA sent right behind its OPEN, before the server accepted the stream, ends the
        session: "before it was accepted"."""
        conn = self.session()
        conn.send(wire.open_stream(1, "echo", self.echo.port), wire.data(1, b"too early"))
        self.expect_goaway(conn, "before it was accepted")

    def test_data_after_fin(self):
        """DATA after the client's own FIN on the same stream ends the session: "after
        FIN"."""
        conn = self.session()
        self.open_echo(conn, 1)
        conn.send(wire.data(1, b"last", fin=True), wire.data(1, b"and more"))
        self.expect_goaway(conn, "after FIN")

    def test_data_after_the_stream_finished_both_ways(self):
        """DATA on a stream both sides have finished (the client's FIN, then the echo's
        bytes and FIN back) ends the session: "after FIN"."""
        conn = self.session()
        self.open_echo(conn, 1)
        conn.send(wire.data(1, b"ping", fin=True))
        echoed = b""
        while True:
            f, _ = conn.read_until(lambda f: f.type == wire.DATA and f.stream_id == 1,
                                   timeout=10, what="the echo and its FIN")
            echoed += f.payload
            if f.fin:
                break
        self.assertEqual(echoed, b"ping")
        conn.send(wire.data(1, b"again"))
        self.expect_goaway(conn, "after FIN")

    def test_open_result_for_a_stream_never_opened(self):
        """OPEN_RESULT for stream 2, which the server never opened, ends the session: "never
        opened"."""
        conn = self.session()
        conn.send(wire.open_result(2, wire.OK))
        self.expect_goaway(conn, "never opened")

    def test_ping_ack_nobody_asked_for(self):
        """A PING ACK that answers no PING of the server's ends the session: "nobody
        asked"."""
        conn = self.session()
        conn.send(wire.ping(12345, ack=True))
        self.expect_goaway(conn, "nobody asked")

    def test_open_with_an_id_not_above_the_last(self):
        """OPEN with the id of a stream already opened, or a lower one, ends the session:
        "out of order"."""
        for second in (3, 1):
            with self.subTest(second_id=second):
                conn = self.session()
                self.open_echo(conn, 3)
                conn.send(wire.open_stream(second, "echo", self.echo.port))
                self.expect_goaway(conn, "out of order")

    def test_open_with_an_even_id(self):
        """OPEN with an even id (the server's) ends the session: "out of order"."""
        conn = self.session()
        conn.send(wire.open_stream(2, "echo", self.echo.port))
        self.expect_goaway(conn, "out of order")

    # -- the handshake -------------------------------------------------------------------------

    def test_hello_as_an_agent_with_a_client_token_is_refused(self):
        """HELLO with role 1 (agent) and a client's token is refused with code 2
        (forbidden) saying that it is not an agent credential, not welcomed as a client."""
        conn = self.raw()
        conn.send(wire.hello(self.token, role=wire.ROLE_AGENT))
        self.expect_refuse(conn, wire.FORBIDDEN, "not an agent credential")

    def test_hello_with_an_unknown_role_is_refused(self):
        """HELLO with role 7 is refused with code 7 naming the role, not dropped
        silently."""
        conn = self.raw()
        conn.send(wire.hello(self.token, role=7))
        self.expect_refuse(conn, wire.PROTOCOL_ERROR, "role")

    def test_hello_with_a_zero_window_is_refused(self):
        """HELLO granting a session window or a stream window of 0 is refused with code 7
        naming the window."""
        for fields in ({"session_window": 0}, {"stream_window": 0}):
            with self.subTest(**fields):
                conn = self.raw()
                conn.send(wire.hello(self.token, **fields))
                self.expect_refuse(conn, wire.PROTOCOL_ERROR, "window")

    def test_first_frame_not_hello_is_refused(self):
        """A PING before HELLO is refused with code 7: "expected HELLO"."""
        conn = self.raw()
        conn.send(wire.ping(1))
        self.expect_refuse(conn, wire.PROTOCOL_ERROR, "expected HELLO")

    # -- honest refusals -----------------------------------------------------------------------

    def test_refused_stream_does_not_reveal_the_device_address(self):
        """A stream to a device port nobody listens on is refused with code 3 and a message
        without the device's address; the server's own log names the address, and the
        session goes on."""
        conn = self.session()
        conn.send(wire.open_stream(1, "closed", self.closed_port))
        f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT, timeout=10)
        self.assertEqual(f.code, wire.REFUSED, f)
        self.assertNotIn("127.0.1.", f.message)
        self.server.proc.wait_for(r"127\.0\.1\.85", timeout=5, stream="both")
        self.open_echo(conn, 3)


if __name__ == "__main__":
    unittest.main()
