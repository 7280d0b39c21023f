"""The server keeps an audit trail: one info line per session at its end, with the peer, the
credential, how long it lasted, how it ended and its bytes; no token ever appears."""

import re
import unittest

import harness


class AuditTest(harness.TetherTest):
    def test_a_stopped_client_is_one_audit_line(self):
        echo = self.echo_server(harness.device_addr(81))
        server = self.dev_server(devices={"audit-dev": echo.host})
        client = self.connect(server, [("audit-dev", echo.port)])
        harness.echo_roundtrip(client.port, b"x" * 1000)
        self.assertEqual(client.proc.stop(), 0, client.proc.output())
        line = server.proc.wait_line(r"session from \S+ ended after", stream="stderr")
        # A client that stops says so (TLS close_notify): an end, not a lost connection.
        m = re.search(r"ended after ([\d.]+) s, credential 'dev': closed by the client; "
                      r"(\d+) streams, (\d+) bytes from the client, (\d+) to it", line)
        self.assertIsNotNone(m, line)
        self.assertEqual(int(m.group(2)), 1, line)
        self.assertGreaterEqual(int(m.group(3)), 1000, line)
        self.assertGreaterEqual(int(m.group(4)), 1000, line)
        self.assertEqual(server.proc.stop(), 0)
        everything = server.proc.output(tail=100000)
        self.assertNotIn(server.token, everything)


if __name__ == "__main__":
    unittest.main()
