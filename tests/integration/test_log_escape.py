"""Nothing a peer sends reaches a log or a terminal unescaped: the messages of GOAWAY, RESET
and REFUSE frames are printed with control characters as backslash escapes (\\n, \\r,
\\x1b), so a peer can neither forge a log line nor send escape sequences to an operator's
terminal. Checked on the server (a client's GOAWAY and RESET) and on `tether connect` (a
server's REFUSE).
"""

import os
import socket
import ssl
import threading
import unittest

import harness
import wire

FORGED_START = "[2026-01-01 00:00:00.000]"
FORGED_LINE = FORGED_START + " [info] session from 10.0.0.1:1 up, credential 'admin'"


def evil_message(tag):
    """A peer's message with a newline, a carriage return, an ESC sequence and a forged
    log line, between two markers that name `tag`."""
    return ("%s-begin\nsecond line\rback to the start \x1b[31mred\x1b[0m\n%s\n%s-end"
            % (tag, FORGED_LINE, tag))


class EscapeChecks:
    """Assertions over the output of a harness.Proc."""

    def wait_escaped(self, proc, tag, timeout=5.0):
        """Waits for the end of the message tagged `tag`, then checks that nothing came
        out raw and that the message came out escaped, on one line."""
        _, _, line = proc.wait_for(lambda l: ("%s-end" % tag) in l, timeout=timeout,
                                   stream="both", what="the message tagged %r" % tag)
        self.assert_nothing_raw(proc)
        self.assertIn("%s-begin" % tag, line, "the message was split over lines")
        self.assertIn("\\x1b[31mred", line)
        self.assertIn("\\n" + FORGED_START, line)
        self.assertIn("second line\\rback", line)

    def assert_nothing_raw(self, proc):
        """No ESC byte anywhere in the output, and no line that starts like a forged one."""
        lines = proc.lines["stdout"] + proc.lines["stderr"]
        with_esc = [l for l in lines if "\x1b" in l]
        self.assertEqual(with_esc, [], "ESC bytes reached the output")
        forged = [l for l in lines if l.startswith(FORGED_START)]
        self.assertEqual(forged, [], "a forged line reached the output")


def debug_level_args():
    """--log-level debug unless the harness already passes a level that shows it."""
    if harness.LOG_LEVEL in ("debug", "trace"):
        return ()
    if harness.LOG_LEVEL:
        raise unittest.SkipTest("needs debug logs; TETHER_TEST_LOG_LEVEL=%s" % harness.LOG_LEVEL)
    return ("--log-level", "debug")


class ServerLogTest(EscapeChecks, harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(87))
        self.token, digest = harness.new_token()
        self.server = self.config_server(
            harness.credential_toml("laptop", digest, ["*"])
            + harness.device_toml("echo", self.echo.host),
            token=self.token, extra_args=debug_level_args())

    def session(self):
        conn = wire.Conn.to_server(self.server)
        self.addCleanup(conn.close)
        conn.handshake(self.token)
        return conn

    def test_goaway_message_is_escaped_in_the_server_log(self):
        """A client's GOAWAY message shows in the server's log escaped, on one line."""
        tag = "goaway-%s" % os.urandom(4).hex()
        conn = self.session()
        conn.send(wire.goaway(0, wire.GOING_AWAY, evil_message(tag)))
        self.wait_escaped(self.server.proc, tag)

    def test_reset_message_is_escaped_in_the_server_log(self):
        """A client's RESET message for an open stream shows in the server's (debug) log
        escaped, on one line."""
        tag = "reset-%s" % os.urandom(4).hex()
        conn = self.session()
        conn.send(wire.open_stream(1, "echo", self.echo.port))
        f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT, timeout=10)
        self.assertEqual(f.code, wire.OK, f)
        conn.send(wire.reset(1, wire.STREAM_RESET, evil_message(tag)))
        self.wait_escaped(self.server.proc, tag)


class RefusingServer:
    """A TLS server (the test PKI's certificate, on 127.0.0.1) that reads each client's
    first frame and answers it with REFUSE(code, message), then closes."""

    def __init__(self, code, message):
        pki = harness.shared_pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki["cert"], pki["key"])
        self.ca = pki["ca"]
        self.code, self.message = code, message
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.hellos = 0
        self.errors = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return "tls://127.0.0.1:%d" % self.port

    def _serve(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return  # stopped
            try:
                raw.settimeout(harness.scaled(10))
                with wire.Conn(self.ctx.wrap_socket(raw, server_side=True)) as conn:
                    f = conn.read_frame(timeout=10)
                    if f.type == wire.HELLO:
                        self.hellos += 1
                    conn.send(wire.refuse(self.code, self.message))
            except (OSError, AssertionError, wire.Closed) as e:
                self.errors.append(repr(e))
                raw.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)


class ClientOutputTest(EscapeChecks, harness.TetherTest):
    def refusing_server(self, code, tag):
        srv = RefusingServer(code, evil_message(tag))
        self.addCleanup(srv.stop)
        return srv

    def connect_to(self, srv):
        token_file = self.path("token")
        with open(token_file, "w") as f:
            f.write("tt_some-token\n")
        return self.tether("connect", srv.url, "--ca", srv.ca, "--token-file", token_file,
                           "-L", "0:dev-1:22", name="tether-connect")

    def test_refusal_of_the_token_is_printed_escaped(self):
        """A server that refuses the token with an evil message: `tether connect` exits 3
        and prints the message escaped, on one line."""
        tag = "refuse-%s" % os.urandom(4).hex()
        srv = self.refusing_server(wire.BAD_TOKEN, tag)
        p = self.connect_to(srv)
        self.assertEqual(p.wait(timeout=15), 3, p.output())
        self.wait_escaped(p, tag, timeout=1)

    def test_other_refusal_is_logged_escaped(self):
        """A server that refuses with an internal error and an evil message: `tether
        connect` logs the message escaped, on one line, as it retries."""
        tag = "internal-%s" % os.urandom(4).hex()
        srv = self.refusing_server(wire.INTERNAL, tag)
        p = self.connect_to(srv)
        self.wait_escaped(p, tag, timeout=10)
        self.assertGreaterEqual(srv.hellos, 1)


if __name__ == "__main__":
    unittest.main()
