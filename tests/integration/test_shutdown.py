"""Stopping the server while transfers are stalled by backpressure: a first SIGINT starts the
graceful stop, a second one cuts every session at once. Either way the server ends cleanly:
exit code 0, every stream's local connection reset (not left open, not closed as if
complete), and nothing freed while a task still used it (under the sanitizer build, an
AddressSanitizer report in the server's output fails the test)."""

import os
import re
import signal
import socket
import threading
import time
import unittest

import harness
from harness import KiB, MiB


class StalledTransfer:
    """A local connection through the tunnel that pushes bytes toward a device that never
    reads, until its send blocks; then it waits for the connection to end, and records how."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.settimeout(0.5)
        self.sent = 0
        self.end = None
        self.blocked = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        chunk = os.urandom(64 * KiB)
        while self.end is None:
            try:
                self.sent += self.sock.send(chunk)
            except socket.timeout:
                self.blocked.set()
                self._watch_end()
            except (ConnectionResetError, BrokenPipeError):
                self.end = "reset"
            except OSError as e:
                self.end = "error %s" % e

    def _watch_end(self):
        try:
            data = self.sock.recv(4096)
            if data == b"":
                self.end = "eof"
        except socket.timeout:
            pass
        except ConnectionResetError:
            self.end = "reset"

    def close(self):
        self.end = self.end or "closed by the test"
        self.sock.close()


class ShutdownTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.device = self.never_read_server(harness.device_addr(95))
        self.server = self.dev_server(devices={"stall": self.device.host,
                                               "source": harness.device_addr(96)})
        self.client = self.connect(self.server, [("stall", self.device.port)])

    def stalled_transfers(self, n):
        transfers = [StalledTransfer(self.client.port) for _ in range(n)]
        for t in transfers:
            self.addCleanup(t.close)
        for t in transfers:
            self.assertTrue(t.blocked.wait(harness.scaled(20)), "a transfer never stalled")
        return transfers

    def assert_clean_exit(self, proc):
        self.assertEqual(proc.wait(timeout=30), 0, proc.output())
        self.assertNotIn("AddressSanitizer", proc.output(tail=400))
        self.assertNotIn("runtime error:", proc.output(tail=400))

    def test_second_sigint_during_stalled_transfers(self):
        """Eight transfers stalled by a device that never reads; SIGINT twice: the server
        exits 0 at once, and every local connection is reset by the client."""
        transfers = self.stalled_transfers(8)
        self.server.proc.popen.send_signal(signal.SIGINT)
        self.server.proc.wait_for(lambda line: "stopping" in line, stream="stderr", timeout=10)
        self.server.proc.popen.send_signal(signal.SIGINT)
        self.assert_clean_exit(self.server.proc)
        harness.wait_until(lambda: all(t.end for t in transfers), 15,
                           "every stalled transfer to end")
        self.assertEqual([t.end for t in transfers], ["reset"] * len(transfers))

    def test_second_sigint_during_busy_transfers(self):
        """Eight transfers moving data both ways through the server (buffers lent to them
        at every moment); SIGINT twice: the server exits 0 at once, and every transfer ends
        with an error its client sees, none short and clean."""
        source = self.sink_source_server(harness.device_addr(96))
        client = self.connect(self.server, [("source", source.port)])
        outcomes = []

        def one():
            try:
                harness.transfer(client.port, up=256 * MiB, down=256 * MiB, timeout=60)
                outcomes.append("completed")
            except (AssertionError, OSError) as e:
                outcomes.append("failed: %s" % type(e).__name__)

        threads = [threading.Thread(target=one, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        harness.wait_until(lambda: sum(st.get("received", 0) for st in source.stats)
                           > 16 * MiB, 20, "the transfers to get going")
        self.server.proc.popen.send_signal(signal.SIGINT)
        self.server.proc.wait_for(lambda line: "stopping" in line, stream="stderr", timeout=10)
        self.server.proc.popen.send_signal(signal.SIGINT)
        self.assert_clean_exit(self.server.proc)
        for t in threads:
            t.join(harness.scaled(60))
        self.assertEqual(len(outcomes), 8)
        self.assertNotIn("completed", outcomes, "a 256 MiB transfer finished during the stop")

    def test_graceful_stop_cuts_stalled_transfers_after_the_grace_period(self):
        """One SIGTERM with transfers that cannot finish: after the grace period (10 s by
        default) the server closes them and exits 0; the client resets the connections."""
        transfers = self.stalled_transfers(3)
        started = time.monotonic()
        self.server.proc.popen.send_signal(signal.SIGTERM)
        self.assert_clean_exit(self.server.proc)
        self.assertGreaterEqual(time.monotonic() - started, 5.0, "no grace period")
        harness.wait_until(lambda: all(t.end for t in transfers), 15,
                           "every stalled transfer to end")
        self.assertEqual([t.end for t in transfers], ["reset"] * len(transfers))


class GraceCutTotalsTest(harness.TetherTest):
    GRACE_MS = 1000

    def test_final_line_counts_the_streams_the_grace_period_cut(self):
        """Four transfers still moving when the grace period ends: the "server stopped" line
        comes after the session's own last line and counts the bytes those streams moved
        (it said 0 when it was written before the cut sessions had ended)."""
        source = self.sink_source_server(harness.device_addr(97))
        token, digest = harness.new_token()
        server = self.config_server(
            "grace_period_ms = %d\n\n%s%s" % (self.GRACE_MS,
                                                harness.credential_toml("all", digest, ["*"]),
                                                harness.device_toml("source", source.host)),
            token=token)
        client = self.connect(server, [("source", source.port)])

        def one():
            try:
                harness.transfer(client.port, up=2048 * MiB, down=2048 * MiB, timeout=60)
            except (AssertionError, OSError):
                pass  # cut by the stop, as it should be

        threads = [threading.Thread(target=one, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        harness.wait_until(lambda: sum(st.get("sent", 0) for st in source.stats) > 16 * MiB
                           and sum(st.get("received", 0) for st in source.stats) > 16 * MiB,
                           20, "the transfers to get going")
        started = time.monotonic()
        server.proc.popen.send_signal(signal.SIGTERM)
        self.assertEqual(server.proc.wait(timeout=30), 0, server.proc.output())
        self.assertLess(time.monotonic() - started, self.GRACE_MS / 1000 + harness.scaled(5),
                        "the stop did not end promptly")
        server.proc.wait_for("server stopped:", stream="stderr", timeout=5)
        received = sum(st.get("received", 0) for st in source.stats)
        lines = list(server.proc.lines["stderr"])
        ended = [i for i, l in enumerate(lines) if re.search(r"session from \S+ ended", l)]
        stopped = [i for i, l in enumerate(lines) if "server stopped:" in l]
        self.assertEqual(len(stopped), 1, "\n".join(lines))
        self.assertTrue(ended and ended[-1] < stopped[0], "\n".join(lines))
        # One client: its session, and its bulk lane once a transfer turned bulk.
        m = re.search(r"server stopped: [12] sessions served, \d+ streams, (\d+) bytes to "
                      r"devices, (\d+) from them$", lines[stopped[0]])
        self.assertIsNotNone(m, lines[stopped[0]])
        # What the device received went through the server; of the 16 MiB and more it sent,
        # a few may still have been in its socket's buffers when the stream was cut.
        self.assertGreaterEqual(int(m.group(1)), received)
        self.assertGreater(int(m.group(2)), 8 * MiB)


if __name__ == "__main__":
    unittest.main()
