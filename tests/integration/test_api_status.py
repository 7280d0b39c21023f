"""What the API says of devices and sessions (GET /api/v1/devices, /api/v1/sessions and its
live feed), who may see sessions, the dashboard's files and their headers, and the message
log newest first: the endpoints the dashboard is built on, checked without a browser."""

import json
import time
import unittest

from api_fixtures import ApiTest
from harness import device_addr, new_token, scaled, toml_str, transfer, wait_until


def read_event(resp, timeout):
    """The next SSE event with data: (event name, data dict)."""
    deadline = time.monotonic() + timeout
    name, data = "message", None
    while time.monotonic() < deadline:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            return name, data
    raise AssertionError("no event within %.1f s" % timeout)


class ApiStatusTest(ApiTest):
    def setUp(self):
        super().setUp()
        self.sink = self.sink_source_server(device_addr(61))
        self.replier = self.reply_server(device_addr(61))
        _, agent_sha = new_token()
        extra = ("[[credential]]\nname = \"dev-63-agent\"\ntoken_sha256 = %s\n"
                 "agent_for = \"dev-63\"\n\n[[device]]\nid = \"dev-63\"\nagent = true\n\n"
                 % toml_str(agent_sha))
        self.silent_port = self.port_that_never_answers(device_addr(64))
        self.server, keys = self.api_server(
            {"dev-61": device_addr(61), "dev-62": device_addr(62), "dev-64": device_addr(64)},
            {"ops": ["*"], "backend": ["dev-61:*"]}, extra_config=extra, see_sessions=("ops",),
            settings="connect_timeout_ms = 300")
        self.ops, self.backend = keys["ops"], keys["backend"]

    def devices(self, api):
        status, body, _ = api.call("GET", "/api/v1/devices")
        self.assertEqual(status, 200, body)
        return {d["id"]: d for d in body["devices"]}

    def sessions(self):
        status, body, _ = self.ops.call("GET", "/api/v1/sessions")
        self.assertEqual(status, 200, body)
        return body

    def test_devices_say_whether_they_are_reachable_and_what_flowed(self):
        before = self.devices(self.ops)
        self.assertEqual(set(before), {"dev-61", "dev-62", "dev-63", "dev-64"})
        self.assertIsNone(before["dev-61"]["reachable"])  # not dialed yet
        self.assertEqual((before["dev-63"]["kind"], before["dev-63"]["reachable"]), ("agent", False))
        self.assertNotIn(device_addr(61), json.dumps(before))
        self.assertEqual(self.ops.send("dev-62", 9, "x")[1]["status"], "refused")
        self.assertEqual(self.ops.send("dev-61", self.replier.port, "x")[1]["status"], "delivered")
        self.assertEqual(self.ops.send("dev-64", self.silent_port, "x")[1]["status"], "timed_out")
        after = self.devices(self.ops)
        self.assertIs(after["dev-61"]["reachable"], True)
        # A refusal comes from the device: it is there, the port is closed.
        self.assertIs(after["dev-62"]["reachable"], True)
        self.assertEqual((after["dev-62"]["last_dial"]["ok"], after["dev-62"]["last_dial"]["error"]),
                         (False, "refused"))
        # Nothing answered dev-64.
        self.assertIs(after["dev-64"]["reachable"], False)
        self.assertEqual(after["dev-64"]["last_dial"]["error"], "timed_out")
        # A key sees the devices its ACL covers, no others.
        self.assertEqual(set(self.devices(self.backend)), {"dev-61"})

        client = self.connect(self.server, [("dev-61", self.sink.port)])
        transfer(client.port, up=1 << 20, down=2 << 20, seed_up=1, seed_down=2)
        d = self.devices(self.ops)["dev-61"]
        self.assertGreaterEqual(d["bytes_to_device"], 1 << 20)
        self.assertGreaterEqual(d["bytes_from_device"], 2 << 20)
        self.assertGreaterEqual(d["streams_opened"], 1)

    def test_sessions_are_listed_with_their_bytes_for_keys_that_may_see_them(self):
        status, body, _ = self.backend.call("GET", "/api/v1/sessions")
        self.assertEqual((status, body["error"]), (403, "forbidden"), body)
        self.assertIn("see_sessions", body["message"])
        status, body, _ = self.backend.call("GET", "/api/v1/sessions/stream")
        self.assertEqual(status, 403, body)
        self.assertEqual(self.sessions()["sessions"], [])

        conn = self.ops.connection()
        self.addCleanup(conn.close)
        conn.request("GET", "/api/v1/sessions/stream",
                     headers={"Authorization": "Bearer " + self.ops.key})
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.getheader("Content-Type")), (200, "text/event-stream"))
        name, first = read_event(resp, scaled(5))
        self.assertEqual((name, first["sessions"]), ("sessions", []))

        # One session whose bytes all count on it: no bulk lane (test_lanes covers those).
        client = self.connect(self.server, [("dev-61", self.sink.port)], extra_args=("--no-lanes",))
        name, doc = read_event(resp, scaled(5))  # the list changed: sent within a second
        self.assertEqual(name, "sessions")
        self.assertEqual([s["credential"] for s in doc["sessions"]], ["laptop"])
        s = doc["sessions"][0]
        self.assertEqual((s["role"], s["bulk_lane"], s["streams_open"]), ("client", False, 0))
        self.assertRegex(s["peer"], r"^127\.0\.0\.1:\d+$")

        transfer(client.port, up=3 << 20, down=1 << 20, seed_up=3, seed_down=4)
        wait_until(lambda: self.sessions()["sessions"][0]["by_protocol"]["tcp"]["streams_opened"] == 1,
                   scaled(5), "the stream counted")
        s = self.sessions()["sessions"][0]
        self.assertGreaterEqual(s["bytes_to_devices"], 3 << 20)
        self.assertGreaterEqual(s["bytes_from_devices"], 1 << 20)
        self.assertEqual(s["by_protocol"]["udp"]["streams_opened"], 0)
        self.assertEqual(self.sessions()["total"], 1)

        client.proc.stop()
        wait_until(lambda: self.sessions()["sessions"] == [], scaled(10), "the session gone")

    def test_the_dashboard_is_served_with_a_strict_policy(self):
        for path, kind in (("/", "text/html"), ("/dashboard.js", "text/javascript"),
                           ("/dashboard.css", "text/css")):
            status, body, headers = self.ops.call("GET", path, key="")
            self.assertEqual(status, 200, path)
            self.assertTrue(headers["Content-Type"].startswith(kind), headers)
            csp = headers["Content-Security-Policy"]
            self.assertIn("default-src 'self'", csp)
            self.assertNotIn("unsafe", csp)
            self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        status, body, _ = self.ops.call("GET", "/")
        self.assertIn('<script src="/dashboard.js"', body)
        self.assertNotIn("<script>", body)  # nothing inline
        self.assertNotIn("style=", body)
        status, _, headers = self.ops.call("GET", "/nothing.js", key="")
        self.assertEqual(status, 404)
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")  # on JSON answers too
        self.assertEqual(self.ops.call("POST", "/", key="")[0], 404)

    def test_the_log_newest_first(self):
        for word in ("one", "two", "three"):
            self.assertEqual(self.ops.send("dev-61", self.replier.port, word, wait_ms=0)[1]["status"],
                             "delivered")
        body = self.ops.messages(order="newest", limit=2)
        self.assertEqual([m["data"] for m in body["messages"]], ["three", "two"])
        self.assertEqual(body["next"], body["messages"][0]["id"])
        self.assertEqual(self.ops.call("GET", "/api/v1/messages?order=sideways")[0], 400)


if __name__ == "__main__":
    unittest.main()
