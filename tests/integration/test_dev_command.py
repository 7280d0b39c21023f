"""The command `tether server --dev` prints works when pasted: it has one -L per --device,
and the dev certificate covers the --listen address (and any --dev-host), so a server on
127.0.0.5 is trusted as 127.0.0.5."""

import shlex
import unittest

import harness


class DevCommandTest(harness.TetherTest):
    def printed_command(self, server):
        return shlex.split(server.proc.json_event("dev")["command"])

    def run_printed(self, argv):
        self.assertEqual(argv[:2], ["tether", "connect"], argv)
        return self.tether(*argv[1:], "--json", name="tether-connect")

    def test_the_printed_command_connects_and_maps_each_device(self):
        echo = self.echo_server(harness.device_addr(71))
        port = harness.free_port("127.0.0.5")
        server = self.dev_server(devices={"d1": echo.host, "d2": echo.host},
                                 listen="127.0.0.5:%d" % port)
        argv = self.printed_command(server)
        self.assertIn("tls://127.0.0.5:%d" % port, argv)
        self.assertEqual([argv[i + 1] for i, a in enumerate(argv) if a == "-L"],
                         ["0:d1:22", "0:d2:22"])
        client = self.run_printed(argv)
        client.json_event("connected", timeout=harness.scaled(15))
        devices = sorted(ev["device"] for ev in [client.json_event("listening", device="d1"),
                                                  client.json_event("listening", device="d2")])
        self.assertEqual(devices, ["d1", "d2"])
        self.assertNotIn("mismatch", client.output())

    def test_a_dev_host_name_is_covered_by_the_certificate(self):
        port = harness.free_port("127.0.0.1")
        server = self.dev_server(devices={"d1": "127.0.0.1"}, listen="127.0.0.1:%d" % port,
                                 extra_args=("--dev-host", "localhost.localdomain",
                                             "--dev-host", "127.0.0.6"))
        token_file, ca = server.token_file, server.ca
        # Dialled as a name the certificate did not cover before.
        for host in ("localhost", "127.0.0.1"):
            p = self.tether("connect", "tls://%s:%d" % (host, port), "--ca", ca, "--token-file",
                            token_file, "-L", "0:d1:22", "--json", name="tether-connect")
            p.json_event("connected", timeout=harness.scaled(15))
            p.stop()

    def test_a_certificate_for_other_names_says_which_names_it_is_for(self):
        # A certificate for "tunnel.test" only, from a CA the client trusts: another --ca
        # would not help, so the words name the certificate's names and the one dialled.
        ca_dir = self.path("ca")
        ca = harness.make_ca(ca_dir)
        cert, key = harness.make_server_cert(self.path("cert"), ca_dir, names=("tunnel.test",))
        token, sha = harness.new_token()
        config = self.path("tether.toml")
        with open(config, "w") as f:
            f.write("listen = \"127.0.0.1:0\"\ncert = %s\nkey = %s\n\n%s" % (
                harness.toml_str(cert), harness.toml_str(key),
                harness.credential_toml("c", sha, ["*:*"])))
        server = self.tether("server", "--config", config, "--json", name="tether-server")
        port = harness.split_hostport(server.json_event("listening", proto="tls")["local"])[1]
        r = self.run_tether("connect", "tls://127.0.0.1:%d" % port, "--ca", ca, "--token",
                            token, "-L", "0:d1:22", timeout=harness.scaled(20))
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("the server certificate is for tunnel.test, not 127.0.0.1", r.stderr)
        self.assertNotIn("--ca", r.stderr)

    def test_a_bad_dev_host_is_a_usage_error(self):
        r = self.run_tether("server", "--dev", "--listen", "127.0.0.1:0", "--state-dir",
                            self.path("state"), "--dev-host", "not a host!")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--dev-host", r.stderr)

    def test_without_devices_the_command_says_what_to_add(self):
        server = self.dev_server()
        argv = self.printed_command(server)
        self.assertIn("0:DEVICE:22", argv)
        server.proc.wait_line(r"--device ID=ADDRESS", stream="stderr")


    def test_a_client_trusts_the_server_by_its_pin(self):
        echo = self.echo_server(harness.device_addr(72))
        server = self.dev_server(devices={"d1": echo.host})
        pin = server.proc.json_event("dev")["pin"]
        r = self.run_tether("server", "--dev", "--state-dir", server.dir, "--print-fingerprint")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, pin), r.stderr)
        p = self.tether("connect", server.url, "--pin", pin, "--token-file", server.token_file,
                        "-L", "0:d1:%d" % echo.port, "--json", name="tether-connect")
        p.json_event("connected", timeout=harness.scaled(15))
        port = harness.split_hostport(p.json_event("listening")["local"])[1]
        harness.echo_roundtrip(port, b"pinned")
        p.stop()
        # A fingerprint copied in capitals is the same fingerprint.
        p = self.tether("connect", server.url, "--pin", pin.upper(), "--token-file",
                        server.token_file, "-L", "0:d1:%d" % echo.port, "--json",
                        name="tether-connect")
        p.json_event("connected", timeout=harness.scaled(15))

    def test_another_pin_is_refused_with_exit_4_and_a_bad_one_is_a_usage_error(self):
        server = self.dev_server(devices={"d1": "127.0.0.1"})
        other = "sha256:" + "ab" * 32
        r = self.run_tether("connect", server.url, "--pin", other, "--token-file",
                            server.token_file, "-L", "0:d1:22", timeout=harness.scaled(20))
        self.assertEqual(r.returncode, 4, r.stderr)
        # The hint names the flag that was given: the pin, not a CA.
        self.assertIn("the server's public key is not the pinned one (server 127.0.0.1:%d; "
                      "check --pin)" % server.port, r.stderr)
        r = self.run_tether("connect", server.url, "--pin", "sha256:abc", "--token-file",
                            server.token_file, "-L", "0:d1:22")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--pin", r.stderr)

if __name__ == "__main__":
    unittest.main()
