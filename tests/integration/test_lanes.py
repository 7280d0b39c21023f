"""Lanes (docs/PROTOCOL.md): a stream that turns bulk moves to a second session of its client
and goes on there with every byte in order, over the same device connection; interactive
streams stay on the first session; a move that cannot finish ends the stream with a reset,
never a clean end."""

import json
import os
import re
import signal
import socket
import threading
import time
import unittest
import urllib.request

import harness
from harness import MiB


MOVED = "moves to another of its sessions"


class LanesTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.device = self.sink_source_server(harness.device_addr(23))
        self.server = self.dev_server(devices={"dev-23": self.device.host},
                                      extra_args=("--log-level", "debug"))

    def server_lines(self, pattern):
        return [l for l in self.server.proc.lines["stderr"] if re.search(pattern, l)]

    def wait_moves(self, n):
        harness.wait_until(lambda: len(self.server_lines(MOVED)) >= n, 20,
                           "%d stream(s) to move" % n)

    def test_a_bulk_transfer_moves_and_keeps_every_byte_and_its_device_connection(self):
        client = self.connect(self.server, [("dev-23", self.device.port)])
        r = harness.transfer(client.port, up=64 * MiB, down=64 * MiB, timeout=120)
        self.assertEqual((r.sent, r.received), (64 * MiB, 64 * MiB))
        self.assertEqual(len(self.server_lines(MOVED)), 1, self.server.proc.output())
        # The device saw one connection from start to end: the move did not redial it.
        self.assertEqual(self.device.connections, 1)
        self.assertEqual(self.device.errors, [])
        lanes = self.server_lines(r"session from \S+ up, .*\(its client's bulk lane\)")
        self.assertEqual(len(lanes), 1, self.server.proc.output())
        # The lane is part of the same client: one `connected`, no reconnection.
        self.assertEqual(len(client.proc.json_events("connected")), 1)

    def test_a_download_alone_moves_too(self):
        client = self.connect(self.server, [("dev-23", self.device.port)])
        r = harness.transfer(client.port, down=48 * MiB, timeout=120)
        self.assertEqual(r.received, 48 * MiB)
        self.assertEqual(len(self.server_lines(MOVED)), 1, self.server.proc.output())
        self.assertEqual(self.device.connections, 1)

    def test_interactive_streams_stay_and_keep_working_beside_a_moved_one(self):
        echo = self.echo_server(harness.device_addr(24))
        server = self.dev_server(devices={"dev-23": self.device.host, "dev-24": echo.host},
                                 extra_args=("--log-level", "debug"))
        client = self.connect(server, [("dev-23", self.device.port), ("dev-24", echo.port)])
        bulk_port, echo_port = client.ports
        done = []
        bulk = threading.Thread(daemon=True, target=lambda: done.append(
            harness.transfer(bulk_port, up=96 * MiB, down=96 * MiB, timeout=120)))
        bulk.start()
        # Small messages back and forth on one connection while the bulk runs beside it.
        with socket.create_connection(("127.0.0.1", echo_port), timeout=harness.scaled(20)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(300):
                msg = b"keystroke %04d\n" % i
                s.sendall(msg)
                self.assertEqual(harness.recv_exact(s, len(msg)), msg)
        bulk.join(harness.scaled(120))
        self.assertEqual(len(done), 1, "the bulk transfer did not finish")
        moved = [l for l in server.proc.lines["stderr"] if MOVED in l]
        self.assertEqual(len(moved), 1, server.proc.output())
        self.assertIn("dev-23", moved[0])

    def test_no_lanes_keeps_one_session(self):
        client = self.connect(self.server, [("dev-23", self.device.port)],
                              extra_args=("--no-lanes",))
        r = harness.transfer(client.port, up=32 * MiB, down=32 * MiB, timeout=120)
        self.assertEqual((r.sent, r.received), (32 * MiB, 32 * MiB))
        self.assertEqual(self.server_lines(MOVED), [])
        self.assertEqual(len(self.server_lines(r"session from \S+ up")), 1)

    def test_the_api_lists_the_bulk_lane_and_the_bytes_of_both(self):
        client = self.connect(self.server, [("dev-23", self.device.port)])
        harness.transfer(client.port, up=24 * MiB, down=8 * MiB, timeout=120)
        api = self.server.proc.json_event("api")
        key = open(api["api_key_file"]).read().strip()

        def get(path):
            req = urllib.request.Request(api["url"] + path,
                                         headers={"Authorization": "Bearer " + key})
            return json.load(urllib.request.urlopen(req, timeout=harness.scaled(10)))

        sessions = get("/api/v1/sessions")["sessions"]
        self.assertEqual(sorted(s["bulk_lane"] for s in sessions), [False, True], sessions)
        # The stream counts on both sessions; its bytes are split between them, none twice.
        self.assertEqual(sum(s["bytes_to_devices"] for s in sessions), 24 * MiB + 24, sessions)
        self.assertEqual(sum(s["bytes_from_devices"] for s in sessions), 8 * MiB + 64, sessions)
        # For the device it was one stream, opened once, over and done with.
        device = [d for d in get("/api/v1/devices")["devices"] if d["id"] == "dev-23"][0]
        self.assertEqual((device["streams_opened"], device["streams_open"]), (1, 0), device)
        self.assertEqual(device["bytes_to_device"], 24 * MiB + 24, device)

    def test_the_final_totals_count_a_moved_stream_once(self):
        client = self.connect(self.server, [("dev-23", self.device.port)])
        harness.transfer(client.port, up=16 * MiB, down=16 * MiB, timeout=120)
        self.wait_moves(1)
        self.server.proc.popen.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.proc.wait(timeout=30), 0, self.server.proc.output())
        stopped = self.server_lines("server stopped:")
        self.assertEqual(len(stopped), 1, self.server.proc.output())
        self.assertRegex(stopped[0], r"server stopped: 2 sessions served, 1 streams, %d bytes "
                         r"to devices, %d from them$" % (16 * MiB + 24, 16 * MiB + 64))

    def moved_download(self, client):
        """A download that moved, read up to a point and then left unread: (socket, seed)."""
        seed = 7
        s = harness.open_source(client.port, 512 * MiB, seed)
        self.addCleanup(s.close)
        harness.read_expected(s, seed, 8 * MiB)
        self.wait_moves(1)
        return s

    def test_a_server_killed_after_the_move_resets_the_moved_stream(self):
        client = self.connect(self.server, [("dev-23", self.device.port)])
        s = self.moved_download(client)
        self.server.proc.popen.send_signal(signal.SIGKILL)
        self.server.proc.wait(timeout=10)
        _, how = harness.recv_until_closed(s, timeout=20, limit=1024 * MiB)
        self.assertEqual(how, "reset")

    def test_cutting_the_mapping_resets_a_moved_stream(self):
        run_dir = self.path("run")
        os.makedirs(run_dir, exist_ok=True)
        env = self.env(XDG_RUNTIME_DIR=run_dir)
        client = self.connect(self.server, [("dev-23", self.device.port)], env=env)
        s = self.moved_download(client)
        name = "dev-23:%d" % self.device.port
        r = self.run_tether("map", "rm", name, "--now", env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("1 connection reset", r.stdout)
        _, how = harness.recv_until_closed(s, timeout=20, limit=1024 * MiB)
        self.assertEqual(how, "reset")
        harness.wait_until(lambda: self.device.active == 0, 10, "the device connection to end")


if __name__ == "__main__":
    unittest.main()
