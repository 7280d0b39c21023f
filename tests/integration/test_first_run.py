"""A client that tells the truth fast: local mistakes fail at once with exit 2 and the flag
named, a server that cannot be reached ends the first attempt unless --retry says otherwise,
Ctrl-C cancels a connect in progress, --json scripts get connecting / ready / error events,
tokens are trimmed and their source named, and `-- CMD` runs a command through the tunnel."""

import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest

import harness


class SilentServer:
    """Accepts TCP connections and never says a word (nor reads): a server that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        try:
            while True:
                self.conns.append(self.sock.accept()[0])
        except OSError:
            pass

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class PeerServer:
    """Accepts TCP connections and hands each to `handle(conn)` on its own thread, then
    closes it: a peer at a port where a tether server was expected."""

    def __init__(self, handle):
        self.handle = handle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            while True:
                conn = self.sock.accept()[0]
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        except OSError:
            pass

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            self.handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.sock.close()


def process_gone(pid):
    """True once `pid` has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class FirstRunTest(harness.TetherTest):

    def closed_port(self):
        return harness.free_port()

    def run_connect(self, *args, timeout=20.0, env=None):
        start = time.monotonic()
        r = self.run_tether("connect", *args, timeout=timeout, env=env)
        return r, time.monotonic() - start

    # -- local mistakes: exit 2 at once, no network needed -------------------------------

    def test_a_local_port_in_use_is_a_usage_error_before_any_dial(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The server's port is closed: the client must not get as far as dialling it.
        url = "tls://127.0.0.1:%d" % self.closed_port()
        r, seconds = self.run_connect(url, "--token", "t", "-L", "0:d:22", "-L",
                                      "%d:d:80" % port)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("error: -L '%d:d:80': 127.0.0.1:%d is in use" % (port, port), r.stderr)
        self.assertNotIn("connecting", r.stdout + r.stderr)
        self.assertLess(seconds, harness.scaled(5))
        # The same local port twice is the same mistake.
        free = harness.free_port()
        r, _ = self.run_connect(url, "--token", "t", "-L", "%d:d:22" % free, "-L",
                                "%d:d:80" % free)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("-L '%d:d:80': 127.0.0.1:%d is in use" % (free, free), r.stderr)

    def test_numeric_options_are_checked(self):
        url = "tls://127.0.0.1:%d" % self.closed_port()
        for args, words in ((["--connect-timeout", "-1"], "--connect-timeout -1: give seconds"),
                            (["--wait-for-session", "1e9"], "--wait-for-session 1e+09: give"),
                            # Echoed as typed, not as the number of bytes it stands for.
                            (["--max-stream-window", "99G"],
                             "error: --max-stream-window 99G: give a size from 64K to 1G"),
                            (["--retry", "often"], "--retry 'often': give a number of attempts")):
            with self.subTest(args=args):
                r, _ = self.run_connect(url, "--token", "t", "-L", "0:d:22", *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(words, r.stderr)

    def test_a_bad_log_level_is_a_usage_error_of_every_command(self):
        url = "tls://127.0.0.1:%d" % self.closed_port()
        for argv in (["connect", url, "--token", "t", "-L", "0:d:22"],
                     ["server", "--dev", "--state-dir", self.path("state")],
                     ["up", "-f", self.path("tunnels.toml")],
                     ["agent", url, "--token", "t", "--allow", "22"]):
            with self.subTest(command=argv[0]):
                r = self.run_tether(*argv, "--log-level", "loud")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("unknown log level 'loud' (use trace, debug, info, warn, error or "
                              "off)", r.stderr)
                self.assertNotIn("connecting", r.stdout + r.stderr)

    def test_key_and_token_files_that_cannot_be_one_are_named_before_any_dial(self):
        ssh = "ssh://u@127.0.0.1:%d" % self.closed_port()
        key = self.path("id_ed25519")
        harness.ssh_keygen(key, "test key")
        missing = self.path("no-such-key")
        for path, words in ((missing, "-i %s: the file does not exist" % missing),
                            (key + ".pub", "-i %s.pub: is a public key; -i wants the private "
                                           "key, e.g. %s" % (key, key)),
                            (self.tmp, "-i %s: is a directory" % self.tmp)):
            with self.subTest(path=path):
                r, seconds = self.run_connect(ssh, "-i", path, "-L", "0:d:22")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("error: " + words, r.stderr)
                self.assertNotIn("connecting", r.stdout + r.stderr)
                self.assertLess(seconds, harness.scaled(5))
        r, _ = self.run_connect("tls://127.0.0.1:%d" % self.closed_port(), "--token-file",
                                self.tmp, "-L", "0:d:22")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("error: token file '%s' is a directory, not a file holding a token"
                      % self.tmp, r.stderr)

    # -- the first attempt ----------------------------------------------------------------

    def test_an_unreachable_server_ends_the_first_attempt(self):
        port = self.closed_port()
        r, seconds = self.run_connect("tls://127.0.0.1:%d" % port, "--token", "t", "-L",
                                      "0:d:22", "--json")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("error: cannot reach 127.0.0.1:%d: connection refused" % port, r.stderr)
        self.assertLess(seconds, harness.scaled(5))
        events = [harness.Proc._parse_json(l) for l in r.stdout.splitlines()]
        names = [e["event"] for e in events]
        self.assertEqual(names[0], "listening")
        self.assertIn("connecting", names)
        error = events[-1]
        self.assertEqual((error["event"], error["code"], error["reason"]),
                         ("error", 1, "unreachable"))
        self.assertIn("connection refused", error["message"])

    def test_retry_n_then_gives_up_and_forever_keeps_going(self):
        url = "tls://127.0.0.1:%d" % self.closed_port()
        p = self.tether("connect", url, "--token", "t", "-L", "0:d:22", "--json",
                        "--retry", "2")
        self.assertEqual(p.wait(timeout=30), 1, p.output())
        self.assertEqual(len(p.json_events("disconnected")), 2, p.output())
        p = self.tether("connect", url, "--token", "t", "-L", "0:d:22", "--json",
                        "--retry", "forever")
        harness.wait_until(lambda: len(p.json_events("disconnected")) >= 4, 30,
                           "four retries")
        self.assertTrue(p.running)
        self.assertEqual(p.stop(), 0)

    def test_a_peer_that_is_not_tls_ends_the_first_attempt(self):
        plain = self.echo_server("127.0.0.1")  # answers the ClientHello with itself
        r, _ = self.run_connect("tls://127.0.0.1:%d" % plain.port, "--token", "t",
                                "-L", "0:d:22")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("error: cannot reach 127.0.0.1:%d: TLS handshake failed" % plain.port,
                      r.stderr)

    def serve(self, handle):
        peer = PeerServer(handle)
        self.addCleanup(peer.stop)
        return peer

    def test_a_peer_that_is_no_tether_server_is_said_to_be_what_it_is(self):
        def ssh_banner(conn):
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            conn.recv(4096)

        def hang_up(conn):
            conn.recv(4096)

        pki = harness.shared_pki()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(pki["cert"], pki["key"])

        def tls_but_not_tether(conn):
            with tls.wrap_socket(conn, server_side=True) as s:
                s.recv(4096)  # the HELLO, unanswered

        for handle, words in ((ssh_banner, "is not a TLS server (it sent "
                                           "'SSH-2.0-OpenSSH_9.6\\r\\n')"),
                              (hang_up, "closed the connection during the TLS handshake (not a "
                                        "tether server?)"),
                              (tls_but_not_tether, "completed the TLS handshake but closed the "
                                                   "connection instead of answering tether's "
                                                   "hello (not a tether server?)")):
            with self.subTest(peer=handle.__name__):
                peer = self.serve(handle)
                r, _ = self.run_connect("tls://127.0.0.1:%d" % peer.port, "--token", "t",
                                        "--ca", pki["ca"], "-L", "0:d:22")
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("error: 127.0.0.1:%d %s\n" % (peer.port, words), r.stderr)

    def test_an_ssh_server_that_cannot_be_reached_is_named_once(self):
        port = self.closed_port()
        r, _ = self.run_connect("ssh://u@127.0.0.1:%d" % port, "-L", "0:d:22")
        self.assertEqual(r.returncode, 1, r.stderr)
        error = [l for l in r.stderr.splitlines() if l.startswith("error:")]
        self.assertEqual(error, ["error: cannot reach 127.0.0.1:%d: connection refused" % port])

    def test_ctrl_c_cancels_a_connect_in_progress(self):
        silent = SilentServer()
        self.addCleanup(silent.stop)
        p = self.tether("connect", "tls://127.0.0.1:%d" % silent.port, "--token", "t",
                        "-L", "0:d:22", "--connect-timeout", "60", "--json")
        p.json_event("connecting", server="127.0.0.1:%d" % silent.port, timeout=10)
        start = time.monotonic()
        p.popen.send_signal(2)  # SIGINT
        self.assertEqual(p.wait(timeout=10), 130, p.output())
        self.assertLess(time.monotonic() - start, harness.scaled(3))
        self.assertIn("interrupted while connecting to 127.0.0.1:%d" % silent.port,
                      "\n".join(p.lines["stderr"]))

    # -- a good session -------------------------------------------------------------------

    def test_ready_once_listening_and_connected_and_the_drain_is_announced(self):
        echo = self.echo_server(harness.device_addr(81))
        server = self.dev_server(devices={"d": echo.host})
        client = self.connect(server, [("d", echo.port), ("d", echo.port)])
        ready = client.proc.json_event("ready")
        self.assertEqual((ready["server"], ready["mappings"]),
                         ("127.0.0.1:%d" % server.port, 2))
        events = [e["event"] for e in map(harness.Proc._parse_json, client.proc.lines["stdout"])
                  if e]
        self.assertEqual(events[:5], ["listening", "listening", "connecting", "connected",
                                      "ready"])
        conn = socket.create_connection(("127.0.0.1", client.ports[0]), timeout=10)
        self.addCleanup(conn.close)
        conn.sendall(b"x")
        self.assertEqual(harness.recv_exact(conn, 1), b"x")
        client.proc.popen.send_signal(2)
        client.proc.wait_line(r"waiting up to 10 s for 1 connection to finish; Ctrl-C again "
                              r"to quit", stream="stderr", timeout=10)
        conn.close()
        self.assertEqual(client.proc.wait(timeout=15), 0)

    def test_tokens_are_trimmed_and_a_rejected_one_names_its_source(self):
        echo = self.echo_server(harness.device_addr(82))
        server = self.dev_server(devices={"d": echo.host})
        env = self.env(TETHER_TOKEN=" %s \n" % server.token)
        p = self.tether("connect", server.url, "--ca", server.ca, "-L", "0:d:%d" % echo.port,
                        "--json", env=env)
        p.json_event("ready")
        p.stop()
        r, _ = self.run_connect(server.url, "--ca", server.ca, "-L", "0:d:1", "--json",
                                env=self.env(TETHER_TOKEN="tt_wrong "))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("the token came from TETHER_TOKEN", r.stderr)
        error = harness.Proc._parse_json(r.stdout.splitlines()[-1])
        self.assertEqual((error["event"], error["code"], error["reason"]),
                         ("error", 3, "bad_token"))

    def test_a_command_runs_through_the_tunnel_and_its_exit_code_is_ours(self):
        page = b"<p>served through the tunnel</p>\n"
        http = self.http_server(harness.device_addr(83), {"index.html": page})
        server = self.dev_server(devices={"web": http.host})
        base = ["connect", server.url, "--ca", server.ca, "--token-file", server.token_file,
                "-L", "0:web:%d" % http.port]
        r = self.run_tether(*base, "--", "sh", "-c",
                            'curl -sS --fail "http://$TETHER_ADDR/" && '
                            'test "$TETHER_PORT" = "$TETHER_PORT_WEB_%d"' % http.port,
                            timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.encode(), page)  # events went to stderr
        self.assertIn("ready: 1 mapping through", r.stderr)
        r = self.run_tether(*base, "--", "sh", "-c", "exit 7", timeout=60)
        self.assertEqual(r.returncode, 7, r.stderr)
        r = self.run_tether(*base, "--", "no-such-command-here", timeout=60)
        self.assertEqual(r.returncode, 127, r.stderr)
        self.assertIn("cannot run 'no-such-command-here': No such file or directory", r.stderr)


    def test_a_command_that_ignores_sigterm_is_killed_when_tether_is_stopped(self):
        server = self.dev_server(devices={"d": "127.0.0.1"})
        pid_file = self.path("command.pid")
        # Ignored signals stay ignored across exec: sleep itself shrugs off TERM and INT.
        # A forced stop (the second Ctrl-C) leaves the event loop's coroutines unfinished on
        # purpose: in a sanitizer build, leak checking would call that a leak.
        asan = os.environ.get("ASAN_OPTIONS")
        env = self.env(ASAN_OPTIONS=asan + ":detect_leaks=0") if asan else None
        p = self.tether("connect", server.url, "--ca", server.ca, "--token-file",
                        server.token_file, "-L", "0:d:22", "--json", "--", "sh", "-c",
                        'trap "" TERM INT; echo $$ > %s; exec sleep 60' % pid_file, env=env)
        harness.wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(),
                           harness.scaled(20), "the command's pid file")
        pid = int(open(pid_file).read())
        start = time.monotonic()
        p.popen.send_signal(signal.SIGINT)  # the command decides: it ignores it
        time.sleep(0.3)
        p.popen.send_signal(signal.SIGINT)  # the second one stops tether
        self.assertEqual(p.wait(timeout=harness.scaled(20)), 130, p.output())
        self.assertLess(time.monotonic() - start, harness.scaled(15))
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    def test_the_command_ends_when_tether_is_killed(self):
        server = self.dev_server(devices={"d": "127.0.0.1"})
        pid_file = self.path("command.pid")
        p = self.tether("connect", server.url, "--ca", server.ca, "--token-file",
                        server.token_file, "-L", "0:d:22", "--json", "--", "sh", "-c",
                        'echo $$ > %s; exec sleep 60' % pid_file)
        harness.wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(),
                           harness.scaled(20), "the command's pid file")
        pid = int(open(pid_file).read())
        self.addCleanup(lambda: process_gone(pid) or os.kill(pid, signal.SIGKILL))
        p.kill()  # SIGKILL: tether cannot stop the command itself; the kernel does
        harness.wait_until(lambda: process_gone(pid), 10, "the command to end with tether")


if __name__ == "__main__":
    unittest.main()
