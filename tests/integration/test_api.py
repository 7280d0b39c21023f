"""The HTTP API's messages: TCP and UDP to real device services, every status, the bounds
(401, 403, 413), the message log and its paging, TLS with curl, and a SIGKILLed server whose
stored message survives."""

import hashlib
import os
import signal
import socket
import subprocess
import time
import unittest

from api_fixtures import Api, ApiTest, ReplyServer, reply_text
from harness import device_addr, free_port, new_token, scaled, shared_pki, wait_until


class ClosingReplier(ReplyServer):
    """Replies, closes its side, then records how the other side ended the connection."""

    def handle(self, conn, stats):
        super().handle(conn, stats)
        conn.shutdown(socket.SHUT_WR)
        try:
            stats["end"] = "closed" if conn.recv(1) == b"" else "data"
        except ConnectionResetError:
            stats["end"] = "reset"


class ApiMessagesTest(ApiTest):
    def setUp(self):
        super().setUp()
        self.replier = self.reply_server(device_addr(41))
        self.silent = self.silent_server(device_addr(41))
        self.udp = self.udp_echo_server(device_addr(41))
        self.server, keys = self.api_server(
            {"dev-41": device_addr(41), "dev-42": device_addr(42)},
            {"ops": ["*"], "narrow": ["dev-41:%d/tcp" % self.replier.port]})
        self.api, self.narrow = keys["ops"], keys["narrow"]

    def test_tcp_message_gets_the_reply_and_both_are_stored(self):
        status, answer, _ = self.api.send("dev-41", self.replier.port, "hello", topics=["t1"])
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["status"], "delivered")
        self.assertEqual(reply_text(answer), b"reply:hello")
        listed = self.api.messages(device="dev-41")["messages"]
        self.assertEqual([m["id"] for m in listed], [answer["id"], answer["replies"][0]["id"]])
        sent, reply = listed
        self.assertEqual((sent["data"], sent["direction"], sent["status"]),
                         ("hello", "to_device", "delivered"))
        self.assertEqual(reply["reply_to"], answer["id"])
        self.assertEqual(reply["data"], "reply:hello")
        self.assertIn("_DEVICE_dev-41_", sent["topics"])
        self.assertIn("t1", sent["topics"])
        self.assertEqual(set(reply["topics"]), {"_DEVICE_dev-41_", "_API_RESP_", "t1"})
        self.assertEqual([m["id"] for m in self.api.messages(topic="_API_RESP_")["messages"]],
                         [reply["id"]])

    def test_binary_payload_and_reply_travel_as_base64(self):
        import base64
        payload = bytes(range(256))
        status, answer, _ = self.api.call(
            "POST", "/api/v1/devices/dev-41/messages",
            {"port": self.replier.port, "base64data": base64.b64encode(payload).decode(),
             "wait_for_reply_ms": 2000})
        self.assertEqual(status, 200, answer)
        self.assertEqual(reply_text(answer), b"reply:" + payload)
        self.assertIn("base64data", answer["replies"][0])

    def test_silent_device_is_delivered_with_no_reply_after_the_wait(self):
        started = time.monotonic()
        status, answer, _ = self.api.send("dev-41", self.silent.port, "anyone?", wait_ms=300)
        took = time.monotonic() - started
        self.assertEqual(status, 200, answer)
        self.assertEqual((answer["status"], answer["replies"]), ("delivered", []))
        self.assertGreaterEqual(took, 0.3)
        self.assertLess(took, scaled(5))
        self.assertEqual(self.silent.connections, 1)

    def test_without_a_wait_the_message_is_delivered_at_once(self):
        status, answer, _ = self.api.send("dev-41", self.replier.port, "fire", wait_ms=0)
        self.assertEqual((status, answer["status"], answer["replies"]), (200, "delivered", []))
        # The device got the bytes and end-of-stream.
        wait_until(lambda: any(s["received"] == 4 for s in self.replier.stats), 10,
                   "the device to read the message to its end")

    def test_without_a_wait_the_device_still_gets_a_graceful_close(self):
        device = self._service(ClosingReplier, device_addr(41))
        status, answer, _ = self.api.send("dev-41", device.port, "fire", wait_ms=0)
        self.assertEqual((status, answer["status"]), (200, "delivered"))
        # The device answers anyway, then closes: the server reads to its end-of-stream and
        # closes in turn, instead of resetting the connection under the device's reply.
        wait_until(lambda: any("end" in s for s in device.stats), 10, "the device's close")
        self.assertEqual([s["end"] for s in device.stats], ["closed"])

    def test_refused_port(self):
        port = free_port(device_addr(41))
        status, answer, _ = self.api.send("dev-41", port, "x")
        self.assertEqual((status, answer["status"]), (200, "refused"), answer)
        self.assertEqual(self.api.messages()["messages"][-1]["status"], "refused")

    def test_unreachable_device_address_times_out_or_is_unreachable(self):
        status, answer, _ = self.api.send("dev-42", 9, "x", wait_ms=0)
        self.assertEqual(status, 200, answer)
        self.assertIn(answer["status"], ("refused", "unreachable", "timed_out"))

    def test_udp_echo_reply(self):
        status, answer, _ = self.api.send("dev-41", self.udp.port, "ping", proto="udp",
                                          wait_ms=500)
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["status"], "delivered")
        self.assertEqual(reply_text(answer), b"ping")

    def test_many_devices_in_one_request(self):
        status, answer, _ = self.api.call(
            "POST", "/api/v1/messages",
            {"deviceids": ["dev-41", "dev-nope"], "port": self.replier.port, "data": "all",
             "wait_for_reply_ms": 2000})
        self.assertEqual(status, 200, answer)
        by_device = {m["device"]: m for m in answer["messages"]}
        self.assertEqual(by_device["dev-41"]["status"], "delivered")
        self.assertEqual(reply_text(by_device["dev-41"]), b"reply:all")
        self.assertEqual(by_device["dev-nope"]["status"], "unknown_device")
        self.assertNotIn("id", by_device["dev-nope"])

    def test_bad_key_is_401_without_detail(self):
        for key in ("tt_wrong", ""):
            status, answer, headers = self.api.call("GET", "/api/v1/messages", key=key)
            self.assertEqual(status, 401)
            self.assertEqual(answer["error"], "unauthorized")
        status, _, _ = self.api.call("GET", "/healthz", key="")
        self.assertEqual(status, 200)

    def test_basic_auth_carries_the_key_as_password(self):
        import base64
        basic = base64.b64encode(("any:" + self.api.key).encode()).decode()
        status, _, _ = self.api.call("GET", "/api/v1/messages", key="",
                                     headers={"Authorization": "Basic " + basic})
        self.assertEqual(status, 200)

    def test_acl_forbids_other_ports_with_403_and_hides_their_messages(self):
        status, answer, _ = self.narrow.send("dev-41", self.udp.port, "x", proto="udp")
        self.assertEqual((status, answer["error"]), (403, "forbidden"))
        self.api.send("dev-41", self.udp.port, "seen by ops only", proto="udp", wait_ms=0)
        status, answer, _ = self.narrow.send("dev-41", self.replier.port, "mine")
        self.assertEqual(status, 200, answer)
        seen = {m["port"] for m in self.narrow.messages()["messages"]}
        self.assertEqual(seen, {self.replier.port})

    def test_oversize_payload_is_413(self):
        status, answer, _ = self.api.send("dev-41", self.replier.port, "x" * (64 * 1024 + 1))
        self.assertEqual((status, answer["error"]), (413, "payload_too_large"))
        status, answer, _ = self.api.send("dev-41", self.replier.port, "x" * (64 * 1024))
        self.assertEqual(status, 200, answer)

    def test_bad_bodies_are_400(self):
        for body in ('{"port": 0, "data": "x"}', '{"port": 1}', 'not json',
                     '{"port": 7, "data": "x", "wait_for_reply_ms": 99999999}',
                     '{"port": 7, "data": "x", "color": "red"}'):
            status, answer, _ = self.api.call("POST", "/api/v1/devices/dev-41/messages", raw=body)
            self.assertEqual((status, answer["error"]), (400, "bad_request"), body)

    def test_paging_with_the_cursor(self):
        for i in range(5):
            self.api.send("dev-41", self.replier.port, "m%d" % i, wait_ms=0)
        seen, since = [], 0
        while True:
            page = self.api.messages(since=since, limit=2)
            if not page["messages"]:
                break
            self.assertLessEqual(len(page["messages"]), 2)
            seen += [m["data"] for m in page["messages"]]
            since = page["next"]
        self.assertEqual(seen, ["m%d" % i for i in range(5)])


class ApiTlsAndDurabilityTest(ApiTest):
    def test_curl_over_tls_and_a_sigkilled_server_keeps_the_message(self):
        replier = self.reply_server(device_addr(43))
        directory = self.path("server")
        server, keys = self.api_server({"dev-43": device_addr(43)}, {"ops": ["*"]}, tls=True,
                                       directory=directory)
        api = keys["ops"]
        self.assertTrue(api.url.startswith("https://"))
        out = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "--cacert", shared_pki()["ca"],
             "-H", "Authorization: Bearer " + api.key,
             "-d", '{"port": %d, "data": "kept", "wait_for_reply_ms": 2000}' % replier.port,
             api.url + "/api/v1/devices/dev-43/messages"],
            capture_output=True, text=True, timeout=scaled(30))
        self.assertEqual(out.returncode, 0, out.stderr + out.stdout)
        import json
        answer = json.loads(out.stdout)
        self.assertEqual(reply_text(answer), b"reply:kept")
        server.proc.popen.send_signal(signal.SIGKILL)
        server.proc.wait()
        server2, keys2 = self.api_server({"dev-43": device_addr(43)}, {"ops": ["*"]}, tls=True,
                                         directory=directory)
        stored = keys2["ops"].messages()["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in stored],
                         [(answer["id"], "kept"), (answer["replies"][0]["id"], "reply:kept")])


class ApiReloadTest(ApiTest):
    def test_sighup_applies_new_api_keys(self):
        replier = self.reply_server(device_addr(44))
        server, keys = self.api_server({"dev-44": device_addr(44)}, {"ops": ["*"]})
        old = keys["ops"]
        status, _, _ = old.send("dev-44", replier.port, "before")
        self.assertEqual(status, 200)
        new_key, new_sha = new_token()
        with open(server.config) as f:
            text = f.read()
        old_sha = hashlib.sha256(old.key.encode()).hexdigest()
        with open(server.config, "w") as f:
            f.write(text.replace(old_sha, new_sha))
        mark = server.proc.mark()
        server.proc.popen.send_signal(signal.SIGHUP)
        server.proc.json_event("reloaded", after=mark)
        status, answer, _ = old.send("dev-44", replier.port, "old key")
        self.assertEqual((status, answer["error"]), (401, "unauthorized"))
        status, answer, _ = Api(old.url, new_key).send("dev-44", replier.port, "new key")
        self.assertEqual((status, answer["status"]), (200, "delivered"), answer)


if __name__ == "__main__":
    unittest.main()
