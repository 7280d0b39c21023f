"""Streams that cannot be opened fail one by one, each with its own reason, and close their
local connection; the session stays up and keeps carrying good streams."""

import os
import socket
import unittest

import harness
from harness import KiB


class StreamErrorsTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        addr = harness.device_addr(14)
        self.echo = self.echo_server(addr)
        self.other = self.echo_server(addr)  # listening, but not in the access list
        self.refused_port = harness.free_port(addr)  # nothing listens there any more
        token, digest = harness.new_token()
        allow = ["dev-ok:%d" % self.echo.port, "dev-ok:%d" % self.refused_port, "ghost:*"]
        self.server = self.config_server(
            "connect_timeout_ms = 5000\n\n"
            + harness.credential_toml("laptop", digest, allow)
            + harness.device_toml("dev-ok", addr),
            token=token)
        self.cases = [  # (name, device, port, reason, words of the message)
            ("unknown", "ghost", 80, "unknown_device", "unknown device"),
            ("forbidden", "dev-ok", self.other.port, "forbidden", "forbidden by the access list"),
            ("refused", "dev-ok", self.refused_port, "refused", "connection refused by the device"),
        ]

    def expect_closed(self, port):
        """Opens a local connection and expects tether to reset it without data (a reset,
        which can even beat connect() back to a busy caller)."""
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
        except ConnectionResetError:
            return
        with s:
            try:
                s.sendall(b"hello?")
            except OSError:
                pass  # already closed: fine
            data, how = harness.recv_until_closed(s, timeout=30)
        self.assertEqual(data, b"", "a failed stream must not deliver bytes")
        self.assertEqual(how, "reset", "a failed stream must not look like a complete one")

    def test_each_failure_has_its_reason_and_the_session_survives(self):
        mappings = [(device, port) for _, device, port, _, _ in self.cases]
        client = self.connect(self.server, mappings + [("dev-ok", self.echo.port)])
        for (name, device, port, reason, words), local in zip(self.cases, client.ports):
            with self.subTest(name):
                mark = client.proc.mark()
                self.expect_closed(local)
                ev = client.proc.json_event("stream_error", after=mark, device=device, port=port)
                self.assertEqual(ev["reason"], reason)
                self.assertIn(words, ev["message"])
                self.assertTrue(ev["local"].endswith(":%d" % local), ev)

        # The access list was enforced before dialing: the other service saw nobody.
        self.assertEqual(self.other.connections, 0)
        # Same session, still carrying good streams.
        harness.echo_roundtrip(client.ports[-1], os.urandom(256 * KiB))
        harness.echo_roundtrip(client.ports[-1], os.urandom(64 * KiB))
        self.assertEqual(len(client.proc.json_events("connected")), 1)
        self.assertEqual(client.proc.json_events("disconnected"), [])
        self.assertTrue(self.server.proc.running())

    def test_text_messages(self):
        mappings = [(device, port) for _, device, port, _, _ in self.cases]
        client = self.connect(self.server, mappings + [("dev-ok", self.echo.port)], json=False)
        for (name, device, port, _, words), local in zip(self.cases, client.ports):
            with self.subTest(name):
                self.expect_closed(local)
                client.proc.wait_line("stream to %s:%d failed: %s" % (device, port, words),
                                      stream="both")
        harness.echo_roundtrip(client.ports[-1], os.urandom(64 * KiB))

    def test_repeated_failures_do_not_wear_the_session_down(self):
        client = self.connect(self.server, [("ghost", 80), ("dev-ok", self.refused_port),
                                            ("dev-ok", self.echo.port)])
        for _ in range(20):
            self.expect_closed(client.ports[0])
            self.expect_closed(client.ports[1])
        harness.echo_roundtrip(client.ports[2], os.urandom(64 * KiB))
        self.assertEqual(len(client.proc.json_events("connected")), 1)


if __name__ == "__main__":
    unittest.main()
