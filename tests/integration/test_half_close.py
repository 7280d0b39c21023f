"""Half-close travels end to end: after the client shuts its write side it still gets the
device's whole reply, then an orderly EOF (not a reset)."""

import hashlib
import os
import socket
import threading
import unittest

import harness
from harness import MiB


class HalfCloseTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.counter = self.half_close_server(harness.device_addr(13))
        self.echo = self.echo_server(harness.device_addr(13))
        server = self.dev_server(devices={"hc-dev": self.counter.host})
        self.client = self.connect(server, [("hc-dev", self.counter.port),
                                            ("hc-dev", self.echo.port)])

    def test_reply_after_client_shuts_write(self):
        data = os.urandom(3 * MiB + 7)
        with socket.create_connection(("127.0.0.1", self.client.ports[0]), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # the device only answers once it sees EOF
            reply, how = harness.recv_until_closed(s, timeout=30)
        self.assertEqual(reply.decode(), "%d %s\n" % (len(data), hashlib.sha256(data).hexdigest()))
        self.assertEqual(how, "eof")

    def test_empty_request_still_gets_a_reply(self):
        with socket.create_connection(("127.0.0.1", self.client.ports[0]), timeout=30) as s:
            s.shutdown(socket.SHUT_WR)
            reply, how = harness.recv_until_closed(s, timeout=30)
        self.assertEqual(reply.decode(), "0 %s\n" % hashlib.sha256(b"").hexdigest())
        self.assertEqual(how, "eof")

    def test_echo_drains_everything_after_the_half_close(self):
        # 8 MiB is far more than the socket buffers hold: most of the echo is still on its
        # way back when the FIN goes out, and none of it may be cut off.
        data = os.urandom(8 * MiB)
        with socket.create_connection(("127.0.0.1", self.client.ports[1]), timeout=30) as s:
            outcome = []

            def read_all():
                try:
                    outcome.append(harness.recv_until_closed(s, 60, 2 * len(data)))
                except AssertionError as e:
                    outcome.append(e)

            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reader.join(harness.scaled(90))
        self.assertTrue(outcome, "the reader did not finish")
        if isinstance(outcome[0], AssertionError):
            raise outcome[0]
        echoed, how = outcome[0]
        self.assertEqual(len(echoed), len(data))
        self.assertEqual(hashlib.sha256(echoed).digest(), hashlib.sha256(data).digest())
        self.assertEqual(how, "eof")


if __name__ == "__main__":
    unittest.main()
