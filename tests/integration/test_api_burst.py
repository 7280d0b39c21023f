"""A burst of 1,000 messages from 20 concurrent clients: every one answered, stored, and
its reply matched to its own message id in the log. And one address that holds connections
open keeps out only itself (max_connections_per_source), and messages being delivered at
once are bounded (max_messages_in_flight)."""

import socket
import threading
import unittest

import harness
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


class ApiConnectionsPerSourceTest(ApiTest):
    def test_one_address_holding_connections_keeps_out_only_itself(self):
        _, keys = self.api_server({}, {"ops": ["*"]}, api_table="max_connections_per_source = 4")
        api = keys["ops"]

        def connect_from(source):
            s = socket.socket()
            self.addCleanup(s.close)
            s.bind((source, 0))
            s.connect((api.host, api.port))
            return s

        # Four slow requests from one address: its whole share.
        held = [connect_from("127.0.0.50") for _ in range(4)]
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # A fifth from there is closed without an answer; everyone else is still served.
        fifth = connect_from("127.0.0.50")
        fifth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data, _ = harness.recv_until_closed(fifth, timeout=harness.scaled(5))
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"")
        self.assertEqual(api.call("GET", "/healthz", key="")[0], 200)

        # Once they close, the address is served again.
        for s in held:
            s.close()

        def served_again():
            s = connect_from("127.0.0.50")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                data, _ = harness.recv_until_closed(s, timeout=harness.scaled(5))
            except ConnectionResetError:
                return False
            return data.startswith(b"HTTP/1.1 200")

        harness.wait_until(served_again, 5, "127.0.0.50 served after its connections closed")


class ApiMessagesInFlightTest(ApiTest):
    def test_past_max_messages_in_flight_a_request_is_told_to_come_back(self):
        silent = self.silent_server(device_addr(62))
        replier = self.reply_server(device_addr(63))
        _, keys = self.api_server({"dev-62": device_addr(62), "dev-63": device_addr(63)},
                                  {"ops": ["*"]}, api_table="max_messages_in_flight = 2")
        api = keys["ops"]
        # Two deliveries that wait 3 s for a reply that never comes take both places.
        waiting = {}

        def wait_on_silent():
            waiting["answer"] = api.call("POST", "/api/v1/messages", {
                "deviceids": ["dev-62", "dev-62"], "port": silent.port, "data": "hold",
                "wait_for_reply_ms": 3000})

        t = threading.Thread(target=wait_on_silent)
        t.start()
        self.addCleanup(t.join)
        harness.wait_until(lambda: len(silent.stats) >= 2, 5, "both deliveries to connect")
        status, answer, headers = api.send("dev-63", replier.port, "now?")
        self.assertEqual((status, answer["error"]), (503, "busy"), answer)
        self.assertIn("max_messages_in_flight 2", answer["message"])
        self.assertEqual(dict((k.lower(), v) for k, v in headers.items())["retry-after"], "1")
        t.join()
        self.assertEqual(waiting["answer"][0], 200)
        # Once they are done there is room again.
        status, answer, _ = api.send("dev-63", replier.port, "now?")
        self.assertEqual((status, answer["status"]), (200, "delivered"), answer)


if __name__ == "__main__":
    unittest.main()
