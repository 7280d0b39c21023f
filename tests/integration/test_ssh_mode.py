"""`tether connect ssh://`: local connections become direct-tcpip channels of one SSH session
to a private OpenSSH sshd on 127.0.0.1, which connects to services on 127.0.1.x. Bytes are
compared by SHA-256 at both ends; real `ssh` and `curl` run through the tunnel."""

import hashlib
import os
import socket
import subprocess
import unittest

import harness
from harness import MiB
from ssh_mode import SshModeTest

CONNECTIONS = 100


class DeviceClosesFirstServer(harness.TcpService):
    """Sends a greeting and shuts its write side at once, then reads until EOF and records
    the count and SHA-256 of what it read in stats["digest"]."""

    name = "device-closes-first"
    GREETING = b"greetings from a device that has nothing more to say\n" * 1000

    def handle(self, conn, stats):
        conn.sendall(self.GREETING)
        stats["sent"] = len(self.GREETING)
        conn.shutdown(socket.SHUT_WR)
        digest = harness.read_to_eof_digest(conn, stats)
        stats["digest"] = "%d %s" % (stats["received"], digest)


class SshDataTest(SshModeTest):
    def setUp(self):
        super().setUp()
        self.tunnel = self.sshd("127.0.0.1")

    def test_256_mib_each_way_through_one_connection(self):
        device = self.sink_source_server(harness.device_addr(61))
        client = self.ssh_connect(self.tunnel, [(device.host, device.port)])

        r = harness.transfer(client.port, up=256 * MiB, down=256 * MiB, timeout=300)

        self.assertEqual((r.sent, r.received), (256 * MiB, 256 * MiB))
        self.assertEqual(device.connections, 1)
        self.assertEqual(device.errors, [])
        self.assertEqual(len(client.proc.json_events("connected")), 1)
        self.assertEqual(client.proc.json_events("stream_error"), [])
        print("\nssh://: 256 MiB each way in %.1f s" % r.seconds)

    def test_100_concurrent_echo_connections_on_one_session(self):
        echo = self.echo_server(harness.device_addr(62))
        client = self.ssh_connect(self.tunnel, [(echo.host, echo.port)])

        def all_open():
            # Every local connection has its channel (and the sshd its device connection)
            # before any byte moves, so the 100 channels are open at the same time.
            harness.wait_until(lambda: echo.active == CONNECTIONS, 60,
                               "%d open device connections (have %d)" % (CONNECTIONS, echo.active))

        seconds = harness.run_echo_clients(client.port, CONNECTIONS, MiB, timeout=120,
                                           before_sending=all_open)

        self.assertEqual(echo.connections, CONNECTIONS)
        self.assertEqual(echo.errors, [])
        self.assertEqual(len(client.proc.json_events("connected")), 1, "one session only")
        self.assertEqual(client.proc.json_events("stream_error"), [])
        # One SSH connection reached the sshd, for all of them.
        accepted = [l for l in self.tunnel.proc.lines["stderr"] if "Accepted publickey" in l]
        self.assertEqual(len(accepted), 1, accepted)
        print("\nssh://: %d x 1 MiB echoed in %.1f s" % (CONNECTIONS, seconds))

    def test_half_close_both_ways(self):
        counter = self.half_close_server(harness.device_addr(63))
        first = self._service(DeviceClosesFirstServer, harness.device_addr(63))
        client = self.ssh_connect(self.tunnel, [(counter.host, counter.port),
                                                (first.host, first.port)])

        # The client shuts its write side; the device answers only after that EOF.
        data = os.urandom(3 * MiB + 5)
        with socket.create_connection(("127.0.0.1", client.ports[0]), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply, how = harness.recv_until_closed(s, timeout=30)
        self.assertEqual(reply.decode(), "%d %s\n" % (len(data), hashlib.sha256(data).hexdigest()))
        self.assertEqual(how, "eof")

        # The device shuts its write side first; the client reads that EOF and still sends.
        data = os.urandom(4 * MiB + 3)
        with socket.create_connection(("127.0.0.1", client.ports[1]), timeout=30) as s:
            greeting, how = harness.recv_until_closed(s, timeout=30)
            self.assertEqual((greeting, how), (DeviceClosesFirstServer.GREETING, "eof"))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            harness.wait_until(lambda: first.stats and "digest" in first.stats[0], 30,
                               "the device to read the client's bytes up to EOF")
        self.assertEqual(first.stats[0]["digest"],
                         "%d %s" % (len(data), hashlib.sha256(data).hexdigest()))
        self.assertEqual(counter.errors + first.errors, [])
        self.assertEqual(client.proc.json_events("stream_error"), [])

    def test_real_ssh_and_curl_through_the_tunnel(self):
        addr = harness.device_addr(64)
        device_sshd = self.sshd(addr)  # the device's own sshd, reached through the tunnel
        page = b"<!doctype html><title>device</title><p>hello over ssh://</p>\n"
        blob = os.urandom(3 * MiB)
        http = self.http_server(addr, {"index.html": page, "blob.bin": blob})
        client = self.ssh_connect(self.tunnel, [(addr, device_sshd.port), (addr, http.port)])
        ssh_port, http_port = client.ports

        argv = device_sshd.ssh_argv("echo tether-over-ssh-ok; uname -s; sha256sum",
                                    host="127.0.0.1", port=ssh_port)
        data = os.urandom(2 * MiB)
        r = subprocess.run(argv, input=data, capture_output=True, timeout=harness.scaled(60))
        self.assertEqual(r.returncode, 0, "ssh failed: %r" % r.stderr)
        lines = r.stdout.decode().split("\n")
        self.assertEqual(lines[:2], ["tether-over-ssh-ok", "Linux"])
        self.assertEqual(lines[2].split()[0], hashlib.sha256(data).hexdigest())
        device_sshd.proc.wait_line(r"Accepted publickey for", stream="stderr")

        base = "http://127.0.0.1:%d/" % http_port
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", base],
                           capture_output=True, timeout=harness.scaled(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, page)
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", base + "blob.bin"],
                           capture_output=True, timeout=harness.scaled(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(blob).hexdigest())
        self.assertEqual(client.proc.json_events("stream_error"), [])


class SshUsageTest(SshModeTest):
    def test_udp_over_ssh_is_a_usage_error(self):
        # Refused before any connection is tried: nothing needs to listen on the port.
        url = "ssh://%s@127.0.0.1:%d" % ("someone", harness.free_port())
        r = self.run_tether("connect", url, "-i", self.path("no-such-key"),
                            "-L", "0:127.0.1.65:22", "-U", "0:127.0.1.65:53", "--json")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("UDP needs a tls:// server", r.stderr)
        self.assertNotIn('"connected"', r.stdout)


if __name__ == "__main__":
    unittest.main()
