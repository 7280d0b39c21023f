"""A burst of 1,000 messages from 20 concurrent clients: every one answered, stored, and
its reply matched to its own message id in the log."""

import threading
import unittest

from api_fixtures import ApiTest, reply_text
from harness import device_addr


class ApiBurstTest(ApiTest):
    def test_thousand_messages_from_twenty_clients(self):
        replier = self.reply_server(device_addr(61))
        _, keys = self.api_server({"dev-61": device_addr(61)}, {"ops": ["*"]})
        api = keys["ops"]
        answers, failures, lock = {}, [], threading.Lock()

        def client(n):
            for i in range(50):
                payload = "c%02d-m%02d" % (n, i)
                try:
                    status, answer, _ = api.send("dev-61", replier.port, payload, wait_ms=5000)
                except Exception as e:  # noqa: BLE001 - reported below with the payload
                    status, answer = 0, repr(e)
                with lock:
                    if status != 200 or answer.get("status") != "delivered":
                        failures.append((payload, status, answer))
                    else:
                        answers[payload] = answer

        threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(failures, [])
        self.assertEqual(len(answers), 1000)
        for payload, answer in answers.items():
            self.assertEqual(reply_text(answer), b"reply:" + payload.encode())

        # The log holds each message and its reply, the reply pointing at its message.
        rows, since = [], 0
        while True:
            page = api.messages(device="dev-61", since=since, limit=1000)
            if not page["messages"]:
                break
            rows += page["messages"]
            since = page["next"]
        self.assertEqual(len(rows), 2000)
        sent = {m["id"]: m["data"] for m in rows if m["direction"] == "to_device"}
        replies = {m["reply_to"]: m["data"] for m in rows if m["direction"] == "from_device"}
        self.assertEqual(len(sent), 1000)
        self.assertEqual({i: "reply:" + d for i, d in sent.items()}, replies)
        for payload, answer in answers.items():
            self.assertEqual(sent[answer["id"]], payload)


if __name__ == "__main__":
    unittest.main()
