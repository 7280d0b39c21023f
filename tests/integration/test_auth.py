"""Authentication failures end `tether connect` at once with their own exit code and words:
a bad token exits 3, a server certificate from the wrong CA exits 4."""

import time
import unittest

import harness


class AuthTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(15))
        self.server = self.dev_server(devices={"auth-dev": self.echo.host})

    def run_client(self, *args, env=None):
        start = time.monotonic()
        p = self.tether("connect", self.server.url, "-L", "0:auth-dev:%d" % self.echo.port,
                        *args, name="tether-connect", env=env)
        code = p.wait(timeout=20)
        return p, code, time.monotonic() - start

    def stderr(self, p):
        return "\n".join(p.lines["stderr"])

    def test_bad_token_exits_3(self):
        p, code, seconds = self.run_client("--ca", self.server.ca, "--token", "tt_not-the-token")
        self.assertEqual(code, 3, p.output())
        self.assertIn("token", self.stderr(p))
        self.assertIn("authentication failed", self.stderr(p))
        self.assertLess(seconds, harness.scaled(15))

    def test_bad_token_from_the_environment_exits_3(self):
        p, code, _ = self.run_client("--ca", self.server.ca,
                                     env=self.env(TETHER_TOKEN="tt_wrong"))
        self.assertEqual(code, 3, p.output())
        self.assertIn("token", self.stderr(p))

    def test_wrong_ca_exits_4(self):
        other_ca = harness.make_ca(self.path("other-ca"), "some other CA")
        p, code, seconds = self.run_client("--ca", other_ca, "--token-file",
                                           self.server.token_file)
        self.assertEqual(code, 4, p.output())
        self.assertIn("certificate", self.stderr(p))
        self.assertIn("verification failed", self.stderr(p))
        self.assertLess(seconds, harness.scaled(15))
        self.assertNotIn(self.server.token, "\n".join(p.lines["stdout"] + p.lines["stderr"]))

    def test_good_token_from_the_environment_connects(self):
        p = self.tether("connect", self.server.url, "--ca", self.server.ca, "--json",
                        "-L", "0:auth-dev:%d" % self.echo.port, name="tether-connect",
                        env=self.env(TETHER_TOKEN=self.server.token))
        p.json_event("connected")
        port = harness.split_hostport(p.json_event("listening")["local"])[1]
        harness.echo_roundtrip(port, b"authenticated")

    def test_server_keeps_serving_after_failed_attempts(self):
        for _ in range(3):
            _, code, _ = self.run_client("--ca", self.server.ca, "--token", "tt_wrong")
            self.assertEqual(code, 3)
        client = self.connect(self.server, [("auth-dev", self.echo.port)])
        harness.echo_roundtrip(client.port, b"still serving")


if __name__ == "__main__":
    unittest.main()
