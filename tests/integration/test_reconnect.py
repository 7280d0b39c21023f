"""The server is killed (SIGKILL) in the middle of a transfer and started again on the same
port: the client keeps its listeners, reconnects, and new connections carry correct bytes,
including one accepted while the session was down."""

import signal
import socket
import threading
import unittest

import harness
from harness import MiB

SEED = 7


class ReconnectTest(harness.TetherTest):
    def test_client_reconnects_after_the_server_is_killed_mid_transfer(self):
        device = self.sink_source_server(harness.device_addr(16))
        token, digest = harness.new_token()
        config = (harness.credential_toml("laptop", digest, ["dev-r:*"])
                  + harness.device_toml("dev-r", device.host))
        first = self.config_server(config, token=token)
        client = self.connect(first, [("dev-r", device.port)])

        # A long download is under way, and its first bytes are right, when the server dies.
        s = harness.open_source(client.port, 1024 * MiB, seed=SEED)
        self.addCleanup(s.close)
        harness.read_expected(s, SEED, 4 * MiB)
        mark = client.proc.mark()
        self.assertEqual(first.proc.kill(), -9)

        # The tunnelled connection ends instead of hanging.
        rest, _ = harness.recv_until_closed(s, timeout=30, limit=512 * MiB)
        self.assertLess(4 * MiB + len(rest), 1024 * MiB, "the transfer was not cut off")
        s.close()
        ev = client.proc.json_event("disconnected", after=mark, timeout=30)
        self.assertIn("retry_in_ms", ev)
        self.assertTrue(client.proc.running())

        # A connection accepted while the session is down waits for the next session.
        pending = {}

        def early_transfer():
            try:
                pending["result"] = harness.transfer(client.port, up=MiB, down=MiB, timeout=120)
            except AssertionError as e:
                pending["error"] = e

        early = threading.Thread(target=early_transfer, daemon=True)
        early.start()

        second = self.config_server(config, listen="127.0.0.1:%d" % first.port, token=token,
                                    directory=first.dir)
        self.assertEqual(second.port, first.port)
        ev = client.proc.json_event("connected", after=mark, timeout=90)
        self.assertTrue(ev["server"].endswith(":%d" % first.port), ev)
        # The tunnel is usable again, and scripts waiting for `ready` are told so.
        ev = client.proc.json_event("ready", after=mark, timeout=10)
        self.assertEqual(ev["mappings"], 1)

        r = harness.transfer(client.port, up=16 * MiB, down=16 * MiB, timeout=120)
        self.assertEqual((r.sent, r.received), (16 * MiB, 16 * MiB))

        early.join(harness.scaled(150))
        self.assertFalse(early.is_alive(), "the connection made while down never finished")
        if "error" in pending:
            raise pending["error"]
        self.assertEqual(pending["result"].received, MiB)

    def test_a_server_going_away_says_that_open_streams_carry_on(self):
        echo = self.echo_server(harness.device_addr(17))
        server = self.dev_server(devices={"d": echo.host})
        client = self.connect(server, [("d", echo.port)])
        client.proc.json_event("ready")
        conn = socket.create_connection(("127.0.0.1", client.port), timeout=10)
        self.addCleanup(conn.close)
        conn.sendall(b"a")
        self.assertEqual(harness.recv_exact(conn, 1), b"a")
        mark = client.proc.mark()
        server.proc.popen.send_signal(signal.SIGINT)  # a graceful stop: GOAWAY
        ev = client.proc.json_event("disconnected", after=mark, timeout=30)
        self.assertEqual((ev["reason"], ev["retry_in_ms"], ev["continuing_streams"]),
                         ("going away", 0, 1), ev)
        # As the event says: the stream goes on through the session that is going away.
        conn.sendall(b"b")
        self.assertEqual(harness.recv_exact(conn, 1), b"b")


if __name__ == "__main__":
    unittest.main()
