"""Connections that never authenticate are bounded and cheap to turn away: past
max_pending_handshakes_per_source a source's new connections are closed at once, and said
so in the log by the limit's name; a TLS connection that never sends HELLO is closed after
handshake_timeout_ms with a log line that says so; real clients get through meanwhile.
"""

import os
import re
import selectors
import socket
import time
import unittest

import harness
import wire
from harness import KiB


class PendingHandshakesTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(86))
        self.token, self.digest = harness.new_token()

    def start_server(self, extra):
        return self.config_server(
            extra + "\n" + harness.credential_toml("laptop", self.digest, ["*"])
            + harness.device_toml("echo", self.echo.host),
            token=self.token)

    def echo_through_a_client(self, server):
        """A real `tether connect` from 127.0.0.1 carries an echo round trip."""
        p = self.tether("connect", server.url, "--ca", server.ca, "--token-file",
                        server.token_file, "-L", "0:echo:%d" % self.echo.port, "--json",
                        name="tether-connect")
        local = harness.split_hostport(p.json_event("listening", timeout=10)["local"])[1]
        harness.echo_roundtrip(local, os.urandom(64 * KiB), timeout=10)

    def idle_connections(self, server, count, source):
        """`count` TCP connections from `source` that send nothing; closed at cleanup."""
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((source, 0))
            s.settimeout(harness.scaled(5))
            s.connect((server.host, server.port))
        return socks

    @staticmethod
    def count_closed(socks, at_least, timeout):
        """Waits until at least `at_least` of `socks` are closed by the peer (EOF or reset)
        or `timeout` s pass; returns how many were closed."""
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        closed = 0
        deadline = time.monotonic() + harness.scaled(timeout)
        try:
            while closed < at_least:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(min(left, 0.5)):
                    try:
                        b = key.fileobj.recv(4096)
                    except BlockingIOError:
                        continue
                    except (ConnectionResetError, ConnectionAbortedError):
                        b = b""
                    if not b:  # a TLS server says nothing first: readable means closed
                        closed += 1
                        sel.unregister(key.fileobj)
        finally:
            sel.close()
        return closed

    def test_idle_connections_past_the_per_source_limit_are_closed(self):
        """With max_pending_handshakes_per_source = 20, 100 idle TCP connections from
        127.0.0.9: within 5 s the server has closed at least 80, logs the limit by its
        name and number, and a real client from 127.0.0.1 still gets through."""
        server = self.start_server("max_pending_handshakes_per_source = 20\n")
        socks = self.idle_connections(server, 100, "127.0.0.9")
        closed = self.count_closed(socks, 80, timeout=5)
        self.assertGreaterEqual(closed, 80, "%d of 100 idle connections closed" % closed)
        server.proc.wait_for(lambda line: "max_pending_handshakes_per_source" in line
                             and "20" in line, timeout=5, stream="both",
                             what="a log line naming max_pending_handshakes_per_source = 20")
        self.echo_through_a_client(server)

    def test_idle_connections_past_the_server_wide_limit_are_closed(self):
        """With max_pending_handshakes = 20 (and the per-source default of 64), 100 idle
        TCP connections from 127.0.0.11: within 5 s the server has closed at least 80 and
        logs the limit by its name and number; once they are gone a real client gets
        through."""
        server = self.start_server("max_pending_handshakes = 20\n")
        socks = self.idle_connections(server, 100, "127.0.0.11")
        closed = self.count_closed(socks, 80, timeout=5)
        self.assertGreaterEqual(closed, 80, "%d of 100 idle connections closed" % closed)
        server.proc.wait_for(lambda line: re.search(r"max_pending_handshakes(?!_)", line)
                             and re.search(r"\b20\b", line), timeout=5, stream="both",
                             what="a log line naming max_pending_handshakes = 20")
        for s in socks:
            s.close()
        self.echo_through_a_client(server)

    def test_tls_connections_without_hello_are_closed_after_the_handshake_timeout(self):
        """With handshake_timeout_ms = 2000, 50 TLS connections from 127.0.0.10 that never
        send HELLO are all closed by the server within 2 s (plus slack), and the log says
        "no HELLO within 2000 ms", not that a device timed out."""
        server = self.start_server("handshake_timeout_ms = 2000\n")
        conns = []
        for _ in range(50):
            c = wire.Conn.to_server(server, source="127.0.0.10")
            self.addCleanup(c.close)
            conns.append(c)
        deadline = time.monotonic() + harness.scaled(2 + 3)
        for i, c in enumerate(conns):
            left = max(0.1, deadline - time.monotonic())
            frames, how = c.read_until_closed(timeout=left / harness.TIMEOUT_SCALE,
                                              fail_if_open=False)
            self.assertNotEqual(how, "open", "connection #%d still open 2 s after its TLS "
                                "handshake (plus slack)" % i)
            self.assertIsNone(wire.first_of(frames, wire.WELCOME), frames)
        server.proc.wait_for("no HELLO within 2000 ms", timeout=5, stream="both")
        log = server.proc.lines["stdout"] + server.proc.lines["stderr"]
        self.assertEqual([l for l in log if "timed out connecting to the device" in l], [])
        self.echo_through_a_client(server)

    def test_server_logs_its_open_files_limit(self):
        """At startup the server says how many open files it may use."""
        server = self.start_server("")
        server.proc.wait_for("open files", timeout=5, stream="both")


if __name__ == "__main__":
    unittest.main()
