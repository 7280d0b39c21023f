"""`connect -D`: one local SOCKS5 port reaches every device the credential allows, with real
`curl --socks5-hostname` (the host name is the device id); refusals come back as SOCKS reply
codes that curl reports, and a client that is not SOCKS costs only its own connection."""

import hashlib
import os
import socket
import subprocess
import time
import unittest

import harness
from harness import MiB


class SocksTest(harness.TetherTest):

    def setUp(self):
        super().setUp()
        self.page1 = b"<p>device one</p>\n"
        self.blob = os.urandom(3 * MiB)
        self.http1 = self.http_server(harness.device_addr(85), {"index.html": self.page1})
        self.http2 = self.http_server(harness.device_addr(86), {"blob.bin": self.blob})
        self.server = self.dev_server(devices={"one": self.http1.host, "two": self.http2.host})
        proc = self.tether("connect", self.server.url, "--ca", self.server.ca, "--token-file",
                           self.server.token_file, "-D", "0", "--json", name="tether-connect")
        ev = proc.json_event("listening", proto="socks5")
        self.assertEqual(ev["name"], "socks5:*")
        self.port = harness.split_hostport(ev["local"])[1]
        proc.json_event("ready")
        self.proc = proc

    def curl(self, url, *extra):
        return subprocess.run(["curl", "-sS", "--max-time", "30", "--socks5-hostname",
                               "127.0.0.1:%d" % self.port, *extra, url],
                              capture_output=True, timeout=harness.scaled(60))

    def test_curl_reaches_two_devices_through_one_port(self):
        r = self.curl("http://one:%d/" % self.http1.port)
        self.assertEqual((r.returncode, r.stdout), (0, self.page1), r.stderr)
        r = self.curl("http://two:%d/blob.bin" % self.http2.port)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(self.blob).hexdigest())

    def test_refusals_come_back_as_socks_replies(self):
        # An unknown device is "host unreachable" (4), a closed port "connection refused" (5).
        r = self.curl("http://nosuch:80/")
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, rb"SOCKS5 .*\(4\)")
        closed = harness.free_port(self.http1.host)
        r = self.curl("http://one:%d/" % closed)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, rb"SOCKS5 .*\(5\)")
        # ... and the port goes on serving.
        r = self.curl("http://one:%d/" % self.http1.port)
        self.assertEqual((r.returncode, r.stdout), (0, self.page1), r.stderr)

    def test_a_client_that_is_not_socks_costs_only_its_connection(self):
        junk = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(junk.close)
        junk.sendall(b"GET / HTTP/1.1\r\nHost: one\r\n\r\n")
        self.assertEqual(junk.recv(100), b"")  # closed without a word
        silent = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(silent.close)  # says nothing: closed after the handshake timeout
        r = self.curl("http://one:%d/" % self.http1.port)
        self.assertEqual((r.returncode, r.stdout), (0, self.page1), r.stderr)
        silent.settimeout(harness.scaled(20))
        start = time.monotonic()
        self.assertEqual(silent.recv(100), b"")
        self.assertLess(time.monotonic() - start, harness.scaled(15))


if __name__ == "__main__":
    unittest.main()
