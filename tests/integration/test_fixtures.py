"""The harness checked on its own, without tether: if these fail, no other result counts.

Each device-side fixture is driven directly (no tunnel) with the same helpers the tunnel
tests use, and the process helpers are checked against small known programs.
"""

import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

import harness
from harness import MiB


class ProcTest(harness.TetherTest):
    def test_wait_line_returns_the_matching_line(self):
        p = self.start([sys.executable, "-u", "-c",
                        "import sys, time; print('one'); print('port 4242');"
                        "print('err line', file=sys.stderr); time.sleep(30)"])
        self.assertEqual(p.wait_line(r"port \d+"), "port 4242")
        self.assertEqual(p.wait_line("err", stream="stderr"), "err line")
        self.assertEqual(p.wait_line("err", stream="both"), "err line")
        self.assertEqual(p.stop(), -15)

    def test_json_events_are_parsed_and_matched_on_fields(self):
        p = self.start([sys.executable, "-u", "-c",
                        "import json, time\n"
                        "print(json.dumps({'event': 'listening', 'port': 1}))\n"
                        "print('not json {')\n"
                        "print(json.dumps({'event': 'listening', 'port': 2}))\n"
                        "time.sleep(30)"])
        self.assertEqual(p.json_event("listening", port=2)["port"], 2)
        self.assertEqual([e["port"] for e in p.json_events("listening")], [1, 2])
        self.assertEqual(p.json_events("listening", after=p.mark()), [])

    def test_timeout_fails_with_the_output_so_far(self):
        p = self.start([sys.executable, "-u", "-c",
                        "import time; print('hello so far'); time.sleep(30)"])
        p.wait_line("hello")
        with self.assertRaises(AssertionError) as ctx:
            p.wait_line("never printed", timeout=0.3)
        self.assertIn("timed out", str(ctx.exception))
        self.assertIn("hello so far", str(ctx.exception))

    def test_early_exit_fails_at_once_with_the_exit_code(self):
        p = self.start([sys.executable, "-c", "import sys; print('bye'); sys.exit(7)"])
        start = time.monotonic()
        with self.assertRaises(AssertionError) as ctx:
            p.wait_line("never printed", timeout=30)
        self.assertLess(time.monotonic() - start, 10)
        self.assertIn("exited with code 7", str(ctx.exception))
        self.assertEqual(p.wait(), 7)

    def test_stop_escalates_to_sigkill(self):
        p = self.start([sys.executable, "-u", "-c",
                        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                        "print('ready'); time.sleep(60)"])
        p.wait_line("ready")
        self.assertEqual(p.stop(grace=0.5), -9)
        self.assertFalse(p.running())

    def test_stdin_is_fed(self):
        data = os.urandom(3 * MiB)
        p = self.start([sys.executable, "-c",
                        "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read())"
                        ".hexdigest())"], stdin=data)
        self.assertEqual(p.wait_line(r"^[0-9a-f]{64}$"), hashlib.sha256(data).hexdigest())
        self.assertEqual(p.wait(), 0)

    def test_rss_is_read(self):
        p = self.start([sys.executable, "-u", "-c", "import time; print('up'); time.sleep(30)"])
        p.wait_line("up")
        self.assertGreater(p.rss_kib(), 1000)


class ServiceTest(harness.TetherTest):
    def test_echo(self):
        echo = self.echo_server(harness.device_addr(201))
        self.assertEqual(echo.host, "127.0.1.201")
        harness.echo_roundtrip(echo.port, os.urandom(5 * MiB), host=echo.host)
        harness.wait_until(lambda: echo.active == 0, 10, "the echo connection to end")
        self.assertEqual(echo.connections, 1)
        self.assertEqual(echo.errors, [])

    def test_echo_half_closes_after_the_last_byte(self):
        echo = self.echo_server(harness.device_addr(201))
        with socket.create_connection((echo.host, echo.port), timeout=10) as s:
            s.sendall(b"last words")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(harness.recv_until_closed(s), (b"last words", "eof"))

    def test_many_concurrent_echo_clients(self):
        echo = self.echo_server(harness.device_addr(202))
        harness.run_echo_clients(
            echo.port, 50, 256 * 1024, host=echo.host,
            before_sending=lambda: harness.wait_until(lambda: echo.active == 50, 10,
                                                      "50 open connections"))
        self.assertEqual(echo.connections, 50)

    def test_sink_source_both_ways(self):
        svc = self.sink_source_server(harness.device_addr(203))
        r = harness.transfer(svc.port, up=16 * MiB, down=24 * MiB, host=svc.host)
        self.assertEqual((r.sent, r.received), (16 * MiB, 24 * MiB))
        r = harness.transfer(svc.port, up=0, down=12345, host=svc.host)
        self.assertEqual(r.received_sha, harness.det_sha256(r_seed(svc), 12345))
        harness.transfer(svc.port, up=1, down=0, host=svc.host)

    def test_sink_source_stream_can_be_read_slowly_and_checked(self):
        svc = self.sink_source_server(harness.device_addr(203))
        s = harness.open_source(svc.port, 64 * MiB, seed=99, host=svc.host)
        self.addCleanup(s.close)
        harness.wait_until(lambda: svc.stats_for_seed(99) is not None, 10, "the header")
        st = svc.stats_for_seed(99)
        harness.wait_until(lambda: st["sent"] >= MiB, 10, "the source to send")
        harness.read_expected(s, 99, 3 * MiB + 17)
        self.assertLess(st["sent"], 64 * MiB)  # it waits for the reader

    def test_transfer_notices_corruption(self):
        # A fake device that flips one byte of what it sends.
        lsock = socket.socket()
        lsock.bind(("127.0.1.204", 0))
        lsock.listen(1)
        self.addCleanup(lsock.close)

        def bad_device():
            c, _ = lsock.accept()
            with c:
                up, down, seed = harness.SINK_SOURCE_HEADER.unpack(
                    harness.recv_exact(c, harness.SINK_SOURCE_HEADER.size))
                data = b"".join(harness.det_chunks(seed, down))
                c.sendall(b"\x00" + data[1:])
                c.sendall(hashlib.sha256(data).digest() + hashlib.sha256(b"").digest())
                c.shutdown(socket.SHUT_WR)
                harness.recv_until_closed(c)

        threading.Thread(target=bad_device, daemon=True).start()
        with self.assertRaises(AssertionError) as ctx:
            harness.transfer(lsock.getsockname()[1], down=1000, host="127.0.1.204", timeout=10)
        self.assertIn("received other bytes", str(ctx.exception))

    def test_half_close_server_replies_after_eof(self):
        svc = self.half_close_server(harness.device_addr(205))
        data = os.urandom(2 * MiB + 3)
        with socket.create_connection((svc.host, svc.port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply, how = harness.recv_until_closed(s)
        self.assertEqual(how, "eof")
        self.assertEqual(reply.decode(), "%d %s\n" % (len(data), hashlib.sha256(data).hexdigest()))

    def test_stop_ends_open_connections(self):
        echo = self.echo_server(harness.device_addr(206))
        s = socket.create_connection((echo.host, echo.port), timeout=10)
        self.addCleanup(s.close)
        harness.wait_until(lambda: echo.active == 1, 10, "the connection")
        echo.stop()
        self.assertIn(harness.recv_until_closed(s)[1], ("eof", "reset"))
        with self.assertRaises(OSError):
            socket.create_connection((echo.host, echo.port), timeout=5)


class SshdTest(harness.TetherTest):
    def test_ssh_runs_a_command_with_the_host_key_checked(self):
        sshd = self.sshd(harness.device_addr(210))
        r = subprocess.run(sshd.ssh_argv("echo fixture-ok; uname -s"), capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "fixture-ok\nLinux\n")

    def test_forwarding_follows_the_parameter(self):
        echo = self.echo_server(harness.device_addr(211))
        on = self.sshd(harness.device_addr(210), allow_tcp_forwarding=True)
        off = self.sshd(harness.device_addr(210), allow_tcp_forwarding=False)
        target = "%s:%d" % (echo.host, echo.port)
        r = subprocess.run(_with_option(on.ssh_argv(), "-W", target),
                           input=b"through sshd\n", capture_output=True, timeout=60)
        self.assertEqual(r.stdout, b"through sshd\n", r.stderr)
        r = subprocess.run(_with_option(off.ssh_argv(), "-W", target),
                           input=b"x", capture_output=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"forwarding failed", r.stderr)
        off.proc.wait_line("refused local port forward", stream="stderr")

    def test_wrong_host_key_is_refused(self):
        sshd = self.sshd(harness.device_addr(212))
        other = self.sshd(harness.device_addr(212))
        argv = sshd.ssh_argv("true")
        argv[argv.index("-p") + 1] = str(other.port)
        kh = [a for a in argv if a.startswith("UserKnownHostsFile=")][0].split("=", 1)[1]
        with open(kh, "w") as f:
            f.write(sshd.known_hosts_line(port=other.port) + "\n")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("HOST IDENTIFICATION HAS CHANGED", r.stderr)


class HttpTest(harness.TetherTest):
    def test_curl_gets_the_files(self):
        blob = os.urandom(MiB)
        http = self.http_server(harness.device_addr(220),
                                {"index.html": b"<h1>fixture page</h1>\n", "blob.bin": blob})
        url = "http://%s:%d/" % (http.host, http.port)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", url + "index.html"],
                           capture_output=True, timeout=60)
        self.assertEqual(r.stdout, b"<h1>fixture page</h1>\n", r.stderr)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", url + "blob.bin"],
                           capture_output=True, timeout=60)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(blob).hexdigest())


class PkiTest(harness.TetherTest):
    def test_server_certificate_verifies_for_loopback(self):
        pki = harness.shared_pki()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["cert"], pki["key"])
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        self.addCleanup(lsock.close)

        def serve():
            c, _ = lsock.accept()
            with ctx.wrap_socket(c, server_side=True) as t:
                t.sendall(b"tls ok")
                t.recv(10)

        threading.Thread(target=serve, daemon=True).start()
        cctx = ssl.create_default_context(cafile=pki["ca"])
        with socket.create_connection(lsock.getsockname(), timeout=10) as raw:
            with cctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                self.assertEqual(t.recv(10), b"tls ok")

    def test_another_ca_does_not_verify_it(self):
        pki = harness.shared_pki()
        other = harness.make_ca(self.path("other-ca"))
        r = subprocess.run(["openssl", "verify", "-CAfile", other, pki["cert"]],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        r = subprocess.run(["openssl", "verify", "-CAfile", pki["ca"], pki["cert"]],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_token_hash_matches(self):
        token, digest = harness.new_token()
        self.assertEqual(hashlib.sha256(token.encode()).hexdigest(), digest)
        self.assertIn('token_sha256 = "%s"' % digest,
                      harness.credential_toml("laptop", digest, ["dev-1:22"]))


def r_seed(svc):
    return svc.stats[-1]["seed"]


def _with_option(argv, *option):
    """Inserts ssh options before the destination (the last argument)."""
    return argv[:-1] + list(option) + argv[-1:]


if __name__ == "__main__":
    unittest.main()
