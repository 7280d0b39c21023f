"""`tether devices URL` lists the devices and ports the token may reach: the registry filtered
by the credential's ACL, never the devices' addresses; as a table, or the server's JSON with
--json; with connect's exit codes when the token or the server is wrong."""

import json
import unittest

import harness
from test_agent import AgentFixture


class DevicesTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.token, sha = harness.new_token()
        text = harness.credential_toml("laptop", sha, ["dev-a:22/tcp", "dev-b:8000-8099",
                                                       "dev-b:53/udp"])
        for d, n in (("dev-a", 81), ("dev-b", 82), ("dev-c", 83)):
            text += harness.device_toml(d, harness.device_addr(n))
        self.server = self.config_server(text, token=self.token)

    def devices(self, *args, token_file=None):
        return self.run_tether("devices", self.server.url, "--ca", self.server.ca,
                               "--token-file", token_file or self.server.token_file, *args)

    def test_the_table_shows_what_the_token_may_reach(self):
        r = self.devices()
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["DEVICE", "KIND", "PORTS"])
        self.assertEqual([l.split(None, 2) for l in lines[1:]],
                         [["dev-a", "direct", "22/tcp"],
                          ["dev-b", "direct", "8000-8099, 53/udp"]])
        self.assertNotIn("dev-c", r.stdout)
        self.assertNotIn(harness.device_addr(81), r.stdout + r.stderr)

    def test_json_is_the_servers_document(self):
        r = self.devices("--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual([d["id"] for d in doc["devices"]], ["dev-a", "dev-b"])
        self.assertEqual(doc["devices"][1]["ports"],
                         [{"min": 8000, "max": 8099, "proto": "any"},
                          {"min": 53, "max": 53, "proto": "udp"}])

    def test_the_session_is_logged_and_ends_as_a_stop(self):
        r = self.devices()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.server.proc.wait_line(r"closed by the client", stream="stderr")

    def test_a_wrong_token_exits_3_and_an_ssh_url_is_a_usage_error(self):
        bad = self.path("bad-token")
        with open(bad, "w") as f:
            f.write("tt_wrong\n")
        r = self.devices(token_file=bad)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("token rejected", r.stderr)
        self.assertEqual(r.stdout, "")
        r = self.run_tether("devices", "ssh://127.0.0.1:22")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("tls://", r.stderr)


class AgentDevicesTest(AgentFixture):
    def test_an_agent_device_is_listed_offline_then_online(self):
        self.start_server()

        def listed():
            r = self.run_tether("devices", self.server.url, "--ca", self.server.ca,
                                "--token-file", self.server.token_file, "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)["devices"]

        self.assertEqual(listed(), [{"id": self.DEVICE, "kind": "agent", "online": False,
                                     "ports": [{"min": 1, "max": 65535, "proto": "any"}]}])
        self.start_agent("22", "127.0.0.1")
        self.assertTrue(listed()[0]["online"])
        r = self.run_tether("devices", self.server.url, "--ca", self.server.ca,
                            "--token-file", self.server.token_file)
        self.assertEqual(r.stdout.splitlines()[1].split(), [self.DEVICE, "agent", "*"])


if __name__ == "__main__":
    unittest.main()
