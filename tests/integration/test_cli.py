"""The command line: version, help, token generation, and clear refusals of bad input."""

import hashlib
import os
import re
import unittest

import harness


class CliTest(harness.TetherTest):
    def test_version(self):
        r = self.run_tether("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "tether 0.1.0")

    def test_help_names_the_subcommands(self):
        r = self.run_tether("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("server", "connect", "token"):
            self.assertIn(word, r.stdout)
        for sub in ("server", "connect"):
            r = self.run_tether(sub, "--help")
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("-L", self.run_tether("connect", "--help").stdout)

    def test_token_new(self):
        r = self.run_tether("token", "new")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        token = lines[0]
        self.assertRegex(token, r"^\S{32,}$")
        m = re.fullmatch(r'token_sha256 = "([0-9a-f]{64})"', lines[1])
        self.assertIsNotNone(m, lines[1])
        self.assertEqual(m.group(1), hashlib.sha256(token.encode()).hexdigest())
        again = self.run_tether("token", "new").stdout.splitlines()[0]
        self.assertNotEqual(again, token)

    def test_bad_mapping_specs_are_named(self):
        for spec in ("nonsense", "22:dev-42", "70000:dev-42:22", "0:dev-42:0",
                     "0:dev-42:99999", "0::22", "x:dev-42:22", "0:dev-42:ssh"):
            with self.subTest(spec):
                r = self.run_tether("connect", "tls://127.0.0.1:9", "--token", "t", "-L", spec,
                                    timeout=10)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(spec, r.stderr + r.stdout)

    def test_bad_url_is_named(self):
        r = self.run_tether("connect", "carrier-pigeon://x", "--token", "t", "-L", "0:d:1",
                            timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("carrier-pigeon://x", r.stderr + r.stdout)

    def write_config(self, text, name="tether.toml"):
        pki = harness.shared_pki()
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text.replace("CERT", pki["cert"]).replace("KEY", pki["key"]))
        return path

    def assert_config_refused(self, path, *words):
        r = self.run_tether("server", "--config", path, timeout=10)
        self.assertNotEqual(r.returncode, 0, "server accepted a bad config")
        for w in words:
            self.assertIn(w, r.stderr + r.stdout)

    def test_bad_config_files_name_the_problem(self):
        _, digest = harness.new_token()
        good = ('listen = "127.0.0.1:0"\ncert = "CERT"\nkey = "KEY"\n\n'
                + harness.credential_toml("laptop", digest, ["dev-1:22"])
                + harness.device_toml("dev-1", "127.0.1.1"))
        cases = [
            ("missing file", None, ["no-such.toml"]),
            ("syntax", 'listen = "127.0.0.1:0\ncert = \n', ["broken.toml"]),
            ("listen", good.replace('"127.0.0.1:0"', '"nowhere"'), ["listen"]),
            ("token hash", good.replace(digest, "abc123"), ["token_sha256"]),
            ("certificate file", good.replace('"CERT"', '"missing-server.crt"'),
             ["missing-server.crt"]),
            ("allow rule", good.replace('"dev-1:22"', '"dev-1:notaport"'), ["dev-1:notaport"]),
            ("duplicate device", good + harness.device_toml("dev-1", "127.0.1.2"), ["dev-1"]),
        ]
        for name, text, words in cases:
            with self.subTest(name):
                if text is None:
                    path = self.path("no-such.toml")
                else:
                    path = self.write_config(text, "broken.toml" if name == "syntax" else
                                             "tether.toml")
                self.assert_config_refused(path, *words)

    def test_bad_certificate_or_key_is_a_config_error(self):
        """A certificate given as the key, the other way round, a key of another
        certificate or one with a passphrase: exit 2 and a line naming the file and the
        setting in plain words, as for a missing file (it was exit 1 in OpenSSL's words)."""
        _, digest = harness.new_token()
        pki = harness.shared_pki()
        other_key = os.path.join(os.path.dirname(pki["cert"]), "ca.key")
        encrypted = self.path("encrypted.key")
        harness._openssl("pkey", "-in", pki["key"], "-aes256", "-passout", "pass:secret",
                         "-out", encrypted, cwd=self.path("."))
        rest = ('\n' + harness.credential_toml("laptop", digest, ["dev-1:22"])
                + harness.device_toml("dev-1", "127.0.1.1"))
        cases = [
            ("CERT", "CERT", "key: '%s' is a certificate, not a private key" % pki["cert"]),
            ("KEY", "KEY", "cert: '%s' is a private key, not a certificate" % pki["key"]),
            ("CERT", other_key, "key: '%s' does not match the certificate in 'cert' ('%s')"
             % (other_key, pki["cert"])),
            ("CERT", encrypted, "key: '%s' is encrypted with a passphrase; give the key "
             "unencrypted" % encrypted),
        ]
        for cert, key, why in cases:
            with self.subTest(why):
                path = self.write_config('listen = "127.0.0.1:0"\ncert = %s\nkey = %s\n'
                                         % (harness.toml_str(cert), harness.toml_str(key))
                                         + rest)
                r = self.run_tether("server", "--config", path, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stderr.strip(), "error: %s: %s" % (path, why))

    def test_good_config_starts(self):
        # The counterpart of the cases above, so they fail for the reason they name.
        _, digest = harness.new_token()
        path = self.write_config('listen = "127.0.0.1:0"\ncert = "CERT"\nkey = "KEY"\n\n'
                                 + harness.credential_toml("laptop", digest, ["dev-1:22"])
                                 + harness.device_toml("dev-1", "127.0.1.1"))
        p = self.tether("server", "--config", path, name="tether-server")
        line = p.wait_line(r"^listening on 127\.0\.0\.1:\d+$")
        self.assertNotEqual(line, "listening on 127.0.0.1:0")
        self.assertEqual(p.stop(), 0)

    def test_dev_server_prints_the_connect_command(self):
        state = self.path("dev")
        p = self.tether("server", "--dev", "--listen", "127.0.0.1:0", "--state-dir", state,
                        name="tether-server")
        port = int(p.wait_line(r"^listening on 127\.0\.0\.1:\d+$").rsplit(":", 1)[1])
        cmd = p.wait_line(r"^tether connect ")
        # Exactly the command to run; the CA file's name inside the state dir is not fixed.
        # Without --device, DEVICE stands for the id to fill in (the log says so).
        m = re.fullmatch(r"tether connect tls://127\.0\.0\.1:%d --ca (\S+) --token-file (\S+)"
                         r" -L 0:DEVICE:22" % port, cmd)
        self.assertIsNotNone(m, cmd)
        ca, token_file = m.groups()
        self.assertEqual(os.path.dirname(ca), state)
        self.assertEqual(token_file, os.path.join(state, "token"))
        with open(ca) as f:
            self.assertIn("BEGIN CERTIFICATE", f.read())
        with open(token_file) as f:
            self.assertRegex(f.read().strip(), r"^\S{32,}$")
        self.assertEqual(p.stop(), 0)

    def test_sigterm_ends_client_and_server_with_exit_0(self):
        echo = harness.EchoServer(harness.device_addr(30))
        self.addCleanup(echo.stop)
        server = self.dev_server(devices={"d": echo.host})
        client = self.connect(server, [("d", echo.port)])
        harness.echo_roundtrip(client.port, b"before the end")
        self.assertEqual(client.proc.stop(grace=15), 0, client.proc.output())
        self.assertEqual(server.proc.stop(grace=15), 0, server.proc.output())


if __name__ == "__main__":
    unittest.main()
