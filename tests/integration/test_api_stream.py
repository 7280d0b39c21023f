"""The live feed (SSE) sees new messages within a second and resumes from Last-Event-ID;
`tether messages --follow` prints them; /metrics parses as Prometheus text with the counts
the test caused; `tether send` prints the reply."""

import http.client
import json
import socket
import sys
import time
import unittest

from api_fixtures import ApiTest, reply_text
from harness import device_addr, free_port, scaled

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # a Python of its own (pyenv) beside Debian's python3-prometheus-client
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families


def read_events(resp, count, timeout):
    """`count` SSE events from an open response: [(id, data dict)]."""
    events, event = [], {}
    deadline = time.monotonic() + timeout
    while len(events) < count:
        if time.monotonic() > deadline:
            raise AssertionError("only %d events within %.1f s" % (len(events), timeout))
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("id: "):
            event["id"] = int(line[4:])
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line == "" and "data" in event:
            events.append((event["id"], event["data"]))
            event = {}
    return events


class ApiStreamTest(ApiTest):
    def setUp(self):
        super().setUp()
        self.replier = self.reply_server(device_addr(71))
        self.server, keys = self.api_server({"dev-71": device_addr(71)}, {"ops": ["*"]})
        self.api = keys["ops"]

    def open_stream(self, path, headers=None):
        conn = self.api.connection()
        conn.request("GET", path, headers={"Authorization": "Bearer " + self.api.key,
                                           **(headers or {})})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        self.addCleanup(conn.close)
        return resp

    def test_new_messages_arrive_within_a_second_and_resume_after_last_event_id(self):
        resp = self.open_stream("/api/v1/messages/stream?device=dev-71")
        resp.readline()  # the head of the feed is out: the subscription is live
        started = time.monotonic()
        _, answer, _ = self.api.send("dev-71", self.replier.port, "live", wait_ms=2000)
        events = read_events(resp, 2, scaled(5))
        self.assertLess(time.monotonic() - started, scaled(1) + 2.0)  # the send's own wait
        self.assertEqual([e[0] for e in events], [answer["id"], answer["replies"][0]["id"]])
        self.assertEqual(events[1][1]["data"], "reply:live")
        # Reconnect after the first event: the missed one comes first.
        again = self.open_stream("/api/v1/messages/stream?device=dev-71",
                                 {"Last-Event-ID": str(events[0][0])})
        missed = read_events(again, 1, scaled(5))
        self.assertEqual(missed[0][0], events[1][0])

    def test_messages_follow_prints_new_messages(self):
        env = self.env(TETHER_API=self.api.url, TETHER_API_KEY=self.api.key)
        follow = self.tether("messages", "--follow", "--json", "--device", "dev-71", env=env)
        # The feed is live once the server counts its subscriber.
        deadline = time.monotonic() + scaled(10)
        while True:
            metrics = self.api.call("GET", "/metrics", key="")[1]
            if "tether_api_stream_subscribers 1" in metrics:
                break
            self.assertLess(time.monotonic(), deadline, "the follower never subscribed")
            time.sleep(0.05)
        _, answer, _ = self.api.send("dev-71", self.replier.port, "followed", wait_ms=2000)
        line = follow.wait_line(lambda l: '"followed"' in l, timeout=5)
        self.assertEqual(json.loads(line)["id"], answer["id"])

    def test_send_cli_prints_the_reply(self):
        env = self.env(TETHER_API=self.api.url, TETHER_API_KEY=self.api.key)
        out = self.run_tether("send", "--device", "dev-71", "--port", self.replier.port,
                              "--data", "from the cli", "--wait", "2s", env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "reply:from the cli")
        self.assertIn("delivered", out.stderr)
        refused = free_port(device_addr(71))
        out = self.run_tether("send", "--device", "dev-71", "--port", refused, "--data", "x",
                              env=env)
        self.assertEqual(out.returncode, 1)
        self.assertIn("refused", out.stderr)
        out = self.run_tether("send", "--device", "dev-71", "--port", 1, "--data", "x",
                              env=self.env(TETHER_API=self.api.url, TETHER_API_KEY="tt_bad"))
        self.assertEqual(out.returncode, 3, out.stderr)

    def test_send_cli_reads_decimal_waits_and_names_the_longest(self):
        env = self.env(TETHER_API=self.api.url, TETHER_API_KEY=self.api.key)
        out = self.run_tether("send", "--device", "dev-71", "--port", self.replier.port,
                              "--data", "half", "--wait", "1.5s", env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "reply:half")
        for wait, why in (("99999h", "'99999h' is too long (at most 24h)"),
                          ("5d", "'5d' is not a duration (like 5s, 0.5s, 500ms, 2m, 1h)")):
            with self.subTest(wait):
                out = self.run_tether("send", "--device", "dev-71", "--port", 1, "--data", "x",
                                      "--wait", wait, env=env)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertEqual(out.stderr.strip(), "error: --wait: " + why)

    def test_metrics_parse_and_count_what_happened(self):
        for _ in range(3):
            self.api.send("dev-71", self.replier.port, "m", wait_ms=2000)
        self.api.send("dev-71", free_port(device_addr(71)), "m")
        self.api.call("GET", "/api/v1/messages", key="tt_bad")
        status, text, headers = self.api.call("GET", "/metrics", key="")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        self.assertEqual(samples[("tether_api_messages_total", (("status", "delivered"),))], 3)
        self.assertEqual(samples[("tether_api_messages_total", (("status", "refused"),))], 1)
        self.assertEqual(samples[("tether_api_responses_total", (("code", "401"),))], 1)
        self.assertEqual(samples[("tether_api_reply_bytes_total", ())], 3 * len("reply:m"))
        self.assertIn(("tether_sessions_accepted_total", ()), samples)

    def metric_samples(self):
        status, text, _ = self.api.call("GET", "/metrics", key="")
        self.assertEqual(status, 200)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def test_metrics_count_tunnel_sessions_and_streams_by_protocol_and_reason(self):
        client = self.connect(self.server, [("dev-71", self.replier.port), ("no-such-dev", 1)])
        for port in client.ports:  # one stream each: answered, and refused (unknown device)
            with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as s:
                s.shutdown(socket.SHUT_WR)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
        want = {("tether_streams_opened_total", (("proto", "tcp"),)): 1,
                ("tether_streams_open", (("proto", "tcp"),)): 0,
                ("tether_streams_refused_total", (("reason", "unknown_device"),)): 1,
                ("tether_sessions_open", ()): 1,
                ("tether_agents_online", ()): 0}
        deadline = time.monotonic() + scaled(10)
        while True:
            samples = self.metric_samples()
            got = {k: samples.get(k) for k in want}
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(got, want)
        self.assertEqual(samples[("tether_streams_opened_total", (("proto", "udp"),))], 0)


if __name__ == "__main__":
    unittest.main()
