"""Garbage at the TLS port (random bytes, a plain HTTP request, random bytes inside a good
TLS connection) gets that connection closed and harms nothing else: a session that was up
keeps working and new sessions are accepted."""

import os
import socket
import ssl
import threading
import unittest

import harness
from harness import KiB


def garbage(n):
    """n random bytes that cannot start a TLS record (content types 20-23), so a server
    can tell at once that they are not TLS, however short they are."""
    b = bytearray(os.urandom(n))
    if b and 20 <= b[0] <= 23:
        b[0] ^= 0x80
    return bytes(b)


class GarbageTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(18))
        self.server = self.dev_server(devices={"g-dev": self.echo.host})
        self.client = self.connect(self.server, [("g-dev", self.echo.port)])

    def poke(self, payload, use_tls=False):
        """Sends `payload` to the server port and expects the server to close it."""
        raw = socket.create_connection((self.server.host, self.server.port), timeout=30)
        s = raw
        if use_tls:
            ctx = ssl.create_default_context(cafile=self.server.ca)
            s = ctx.wrap_socket(raw, server_hostname=self.server.host)
        with s:
            try:
                s.sendall(payload)
            except OSError:
                pass  # closed before we finished: what we want
            _, how = harness.recv_until_closed(s, timeout=30, limit=KiB * 64)
        return how

    def assert_still_serving(self):
        harness.echo_roundtrip(self.client.port, os.urandom(256 * KiB))
        self.assertEqual(len(self.client.proc.json_events("connected")), 1)
        fresh = self.connect(self.server, [("g-dev", self.echo.port)])
        harness.echo_roundtrip(fresh.port, os.urandom(256 * KiB))
        fresh.proc.stop()
        self.assertTrue(self.server.proc.running())

    def test_random_bytes(self):
        self.poke(garbage(64 * KiB))
        self.poke(garbage(7))
        self.assert_still_serving()

    def test_plain_http_request(self):
        self.poke(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88\r\n\r\n")
        self.assert_still_serving()

    def test_random_bytes_inside_tls(self):
        self.poke(os.urandom(64 * KiB), use_tls=True)
        self.poke(b"\xff" * 4096, use_tls=True)
        self.poke(b"\x00" * 4096, use_tls=True)
        self.assert_still_serving()

    def test_many_garbage_connections_at_once(self):
        errors = []

        def one(i):
            try:
                self.poke(garbage(16 + i * 997), use_tls=bool(i % 2))
            except Exception as e:  # collected and reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(harness.scaled(60))
        self.assertFalse(any(t.is_alive() for t in threads), "a garbage connection hung")
        self.assertEqual(errors, [])
        self.assert_still_serving()


if __name__ == "__main__":
    unittest.main()
