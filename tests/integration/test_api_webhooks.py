"""Webhooks: made with a key, used with JSON and form bodies and no key, listed without
their tokens, revoked (404), rate-limited (429 with Retry-After); `tether webhook`."""

import urllib.parse
import unittest

from api_fixtures import ApiTest, reply_text
from harness import device_addr


class ApiWebhooksTest(ApiTest):
    def setUp(self):
        super().setUp()
        self.replier = self.reply_server(device_addr(51))
        self.server, keys = self.api_server(
            {"dev-51": device_addr(51)},
            {"ops": ["*"], "narrow": ["dev-51:1-10"]},
            api_table="webhook_rate_per_minute = 60\nwebhook_burst = 3\n")
        self.api, self.narrow = keys["ops"], keys["narrow"]

    def create(self, port=None):
        status, hook, _ = self.api.call("POST", "/api/v1/devices/dev-51/webhooks",
                                        {"port": port or self.replier.port, "protocol": "tcp"})
        self.assertEqual(status, 201, hook)
        return hook

    def test_json_and_form_bodies_reach_the_port_without_a_key(self):
        hook = self.create()
        token = hook["url"].rsplit("/", 1)[1]
        self.assertGreaterEqual(len(token), 32)  # at least 128 bits, in base64url
        status, answer, _ = self.api.call("POST", hook["url"],
                                          {"data": "json body", "wait_for_reply_ms": 2000}, key="")
        self.assertEqual((status, answer["status"]), (200, "delivered"), answer)
        self.assertEqual(reply_text(answer), b"reply:json body")
        form = urllib.parse.urlencode({"data": "form body", "wait_for_reply_ms": "2000"})
        status, answer, _ = self.api.call(
            "POST", hook["url"], key="", raw=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 200, answer)
        self.assertEqual(reply_text(answer), b"reply:form body")
        senders = {m["sender"] for m in self.api.messages(device="dev-51")["messages"]
                   if m["direction"] == "to_device"}
        self.assertEqual(senders, {"webhook:%d" % hook["id"]})

    def test_listed_without_tokens_then_revoked_is_404(self):
        hook = self.create()
        status, listed, _ = self.api.call("GET", "/api/v1/devices/dev-51/webhooks")
        self.assertEqual(status, 200)
        self.assertEqual([w["id"] for w in listed["webhooks"]], [hook["id"]])
        self.assertNotIn(hook["token"], str(listed))
        status, _, _ = self.api.call("DELETE", "/api/v1/devices/dev-51/webhooks/%d" % hook["id"])
        self.assertEqual(status, 200)
        status, answer, _ = self.api.call("POST", hook["url"], {"data": "x"}, key="")
        self.assertEqual((status, answer["error"]), (404, "not_found"))
        status, answer, _ = self.api.call("POST", "/webhooks/tt_nonsense", {"data": "x"}, key="")
        self.assertEqual(status, 404)
        # Tokens never reach the log.
        self.assertFalse([l for l in self.server.proc.lines["stderr"] if hook["token"] in l])

    def test_rate_limit_answers_429_with_retry_after(self):
        hook = self.create()
        codes = []
        for _ in range(5):
            status, answer, headers = self.api.call("POST", hook["url"], {"data": "x"}, key="")
            codes.append(status)
        self.assertEqual(codes[:3], [200, 200, 200])
        self.assertEqual(codes[3], 429)
        self.assertGreaterEqual(int(headers["Retry-After"]), 1)

    def test_key_must_cover_the_port(self):
        status, answer, _ = self.narrow.call("POST", "/api/v1/devices/dev-51/webhooks",
                                             {"port": self.replier.port})
        self.assertEqual((status, answer["error"]), (403, "forbidden"))

    def test_unknown_device_is_404_and_nothing_is_stored(self):
        status, answer, _ = self.api.call("POST", "/api/v1/devices/dev-99/webhooks",
                                          {"port": self.replier.port})
        self.assertEqual((status, answer["error"]), (404, "unknown_device"))
        status, listed, _ = self.api.call("GET", "/api/v1/devices/dev-99/webhooks")
        self.assertEqual((status, listed["webhooks"]), (200, []))

    def test_cli_create_ls_rm(self):
        env = self.env(TETHER_API=self.api.url, TETHER_API_KEY=self.api.key)
        out = self.run_tether("webhook", "create", "--device", "dev-51", "--port",
                              self.replier.port, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        url = out.stdout.strip()
        self.assertTrue(url.startswith(self.api.url + "/webhooks/"), url)
        status, answer, _ = self.api.call("POST", url[len(self.api.url):],
                                          {"data": "cli", "wait_for_reply_ms": 2000}, key="")
        self.assertEqual(reply_text(answer), b"reply:cli")
        out = self.run_tether("webhook", "ls", "--device", "dev-51", env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        hook_id = out.stdout.split()[0]
        out = self.run_tether("webhook", "rm", "--device", "dev-51", hook_id, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        status, _, _ = self.api.call("POST", url[len(self.api.url):], {"data": "x"}, key="")
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
