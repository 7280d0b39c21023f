"""Tunnels over a long link: the link emulator (scripts/bench.d/linkemu) between the client
and the server delays every chunk by a one-way time and, for a thin link, limits the rate.
Stream windows grow to such a path and go back after a pause; these tests check that the
bytes arrive intact (SHA-256 on both ends) and that nothing stalls, not how fast they go
(that is scripts/bench's job)."""

import hashlib
import os
import socket
import threading
import time
import unittest

import harness
from harness import MiB

LINKEMU = os.path.join(os.environ.get("TETHER_SOURCE_DIR",
                                      os.path.join(os.path.dirname(__file__), "..", "..")),
                       "scripts", "bench.d", "linkemu")


class LongLinkTest(harness.TetherTest):
    def tunnel_over_link(self, device, *link_args):
        """A server, the emulator in front of it, and a client that dials the emulator."""
        server = self.dev_server(devices={"far-dev": device.host})
        emu = self.start([LINKEMU, "--listen", "127.0.0.1:0",
                          "--to", harness.hostport(server.host, server.port), *link_args],
                         name="linkemu")
        line = emu.wait_line(r"^linkemu listening on \S+")
        host, port = harness.split_hostport(line.split()[-1])
        far = harness.Server(server.proc, host, port, server.ca, server.token_file, server.dir)
        return self.connect(far, [("far-dev", device.port)])

    def test_bulk_both_ways_on_four_streams_at_100_ms(self):
        device = self.sink_source_server(harness.device_addr(61))
        client = self.tunnel_over_link(device, "--delay-ms", "50")
        results, errors = [], []

        def one(i):
            try:
                results.append(harness.transfer(client.port, up=24 * MiB, down=24 * MiB,
                                                timeout=120))
            except Exception as e:  # reported below, with the others
                errors.append("stream %d: %s" % (i, e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual([(r.sent, r.received) for r in results], [(24 * MiB, 24 * MiB)] * 4)
        self.assertEqual(device.errors, [])
        self.assertEqual(len(client.proc.json_events("connected")), 1)

    def test_one_connection_pauses_and_goes_on_at_100_ms(self):
        # The windows grow during the first burst; the pause (longer than the 1 s after
        # which a window goes back to its first size) is the scenario, not a wait: the
        # second burst starts on shrunk windows whose surplus credit the peer still holds,
        # which the receivers withhold. Nothing may stall or go missing.
        device = self.echo_server(harness.device_addr(63))
        client = self.tunnel_over_link(device, "--delay-ms", "50")
        with socket.create_connection(("127.0.0.1", client.port), timeout=60) as s:
            for burst in range(2):
                if burst:
                    time.sleep(1.5)
                data = os.urandom(16 * MiB)
                sender = threading.Thread(target=s.sendall, args=(data,))
                sender.start()
                got = harness.recv_exact(s, len(data), time.monotonic() + harness.scaled(60))
                sender.join()
                self.assertEqual(hashlib.sha256(got).hexdigest(),
                                 hashlib.sha256(data).hexdigest(), "burst %d" % burst)
        self.assertEqual(len(client.proc.json_events("connected")), 1)

    def test_a_thin_link(self):
        # 300 ms round trip at 20 Mbit/s: the first windows are already above this path's
        # bandwidth-delay product; the bytes must go through intact both ways at once.
        device = self.sink_source_server(harness.device_addr(62))
        client = self.tunnel_over_link(device, "--delay-ms", "150", "--rate-mbit", "20")
        r = harness.transfer(client.port, up=3 * MiB, down=3 * MiB, timeout=60)
        self.assertEqual((r.sent, r.received), (3 * MiB, 3 * MiB))
        self.assertEqual(device.errors, [])


if __name__ == "__main__":
    unittest.main()
