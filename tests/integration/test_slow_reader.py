"""One local reader stops reading while its device keeps sending. Another stream on the same
session still moves 64 MiB, and neither tether process buffers the stalled stream's bytes:
the device is held back (flow control reaches it) and resident memory stays bounded. When the
reader resumes, no byte is lost."""

import threading
import time
import unittest

import harness
from harness import MiB

STALLED_SEED = 4242
MAX_GROWTH_KIB = 64 * 1024
# What may sit between the device and the stalled reader: socket buffers on four sockets
# (a few MiB each on loopback) plus the stream's flow-control window. Without flow
# control the device would go on to send everything it was asked for (1 GiB).
MAX_FED = 192 * MiB


class SlowReaderTest(harness.TetherTest):
    def test_stalled_reader_neither_blocks_the_session_nor_grows_memory(self):
        device = self.sink_source_server(harness.device_addr(17))
        server = self.dev_server(devices={"slow-dev": device.host})
        client = self.connect(server, [("slow-dev", device.port)])

        # Warm up first, so buffer pools and TLS state exist before the baseline.
        harness.transfer(client.port, up=8 * MiB, down=8 * MiB)
        baseline = {"server": server.proc.rss_kib(), "client": client.proc.rss_kib()}
        peak = dict(baseline)
        done = threading.Event()

        def sample():  # a measurement, not a synchronisation: the peak while this runs
            while not done.is_set():
                for name, proc in (("server", server.proc), ("client", client.proc)):
                    peak[name] = max(peak[name], proc.rss_kib())
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            stalled = harness.open_source(client.port, 1024 * MiB, seed=STALLED_SEED)
            self.addCleanup(stalled.close)
            harness.wait_until(lambda: (device.stats_for_seed(STALLED_SEED) or {}).get("sent", 0)
                               >= MiB, 30, "the device to feed the stalled stream")
            fed = device.stats_for_seed(STALLED_SEED)

            r = harness.transfer(client.port, up=0, down=64 * MiB, timeout=180)
            self.assertEqual(r.received, 64 * MiB)

            # Then give the stalled stream time to fill whatever it can fill: wait until the
            # device has been held back for a while (or has sent far too much).
            last = {"sent": -1, "since": time.monotonic()}

            def settled():
                if fed["sent"] != last["sent"]:
                    last.update(sent=fed["sent"], since=time.monotonic())
                return fed["sent"] > MAX_FED or time.monotonic() - last["since"] > 1.0

            harness.wait_until(settled, 120, "the stalled stream's sender to be held back")
        finally:
            done.set()
            sampler.join(10)

        growth = {k: peak[k] - baseline[k] for k in peak}
        print("\n64 MiB beside a stalled stream in %.1f s; the device fed the stalled stream "
              "%.1f MiB; RSS growth server %.1f MiB, client %.1f MiB"
              % (r.seconds, fed["sent"] / MiB, growth["server"] / 1024, growth["client"] / 1024))
        self.assertLess(fed["sent"], MAX_FED, "the stalled stream's sender was not held back")
        for name in ("server", "client"):
            self.assertLess(growth[name], MAX_GROWTH_KIB,
                            "%s RSS grew from %d KiB to %d KiB" % (name, baseline[name], peak[name]))

        # The reader resumes: every byte the device sent meanwhile arrives, in order.
        harness.read_expected(stalled, STALLED_SEED, 16 * MiB)
        self.assertTrue(server.proc.running())
        self.assertEqual(client.proc.json_events("stream_error"), [])


if __name__ == "__main__":
    unittest.main()
