"""`tether server --workers N` spreads its sessions over N event-loop threads.

Sixteen client sessions (one `tether connect` each) land on two workers in turn and move
bytes on concurrent streams, every byte checked end to end, while the server reloads its
config (SIGHUP): the sessions of a credential the reload removed are ended on both
workers, the others go on untouched. Then a graceful stop (SIGTERM) with a stream running
on every session lets them all finish on both workers before the server exits 0.
Also: the number of workers comes from the flag, the config file or the CPUs, and a reload
that changes it says that it needs a restart."""

import hashlib
import os
import random
import re
import signal
import threading
import time
import unittest
from unittest import mock

import harness
from harness import MiB

MAIN_SESSIONS = 12
GONE_SESSIONS = 4
STREAMS_PER_SESSION = 2
UP = DOWN = 2 * MiB  # per stream, while the config is reloaded
DRAIN_DOWN = 16 * MiB  # per stream, while the server stops: more than the buffers hold
HEAD = 64 * 1024  # of each drain stream, read before the stop

SESSION_UP = re.compile(r"session from (\S+) up, credential '(\w+)', worker (\d+)")
SESSION_GONE = re.compile(r"session from (\S+) closed: credential 'gone' was removed")


class WorkersTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.device = self.sink_source_server(harness.device_addr(71))
        self.main_token, self.main_sha = harness.new_token()
        self.gone_token, self.gone_sha = harness.new_token()

    def config_text(self, with_gone, extra=""):
        # A grace period far beyond what the drain needs, even under the sanitizers: the
        # server must end as soon as the streams do, not when the grace period is over.
        text = "grace_period_ms = 120000\n" + extra + "\n"
        text += harness.credential_toml("main", self.main_sha, ["dev-1:*"])
        if with_gone:
            text += harness.credential_toml("gone", self.gone_sha, ["dev-1:*"])
        return text + harness.device_toml("dev-1", self.device.host)

    def rewrite(self, server, text):
        with open(server.config) as f:
            head = f.read().split("\n\n", 1)[0]  # listen, cert and key
        with open(server.config, "w") as f:
            f.write(head + "\n\n" + text)

    def sessions_up(self, server):
        """{peer: (credential, worker)} from the server's "session ... up" lines."""
        with server.proc._cond:
            lines = list(server.proc.lines["stderr"])
        return {m.group(1): (m.group(2), int(m.group(3)))
                for m in map(SESSION_UP.search, lines) if m}

    def run_transfers(self, ports):
        """A bidirectional transfer on each port at once, in threads; returns (threads,
        errors): the errors list fills as transfers fail."""
        errors = []

        def one(port):
            try:
                harness.transfer(port, up=UP, down=DOWN, timeout=300)
            except Exception as e:  # reported by the test, with the port
                errors.append("port %d: %s" % (port, e))

        threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in ports]
        for t in threads:
            t.start()
        return threads, errors

    def test_sessions_on_two_workers_survive_a_reload_and_drain_on_a_graceful_stop(self):
        server = self.config_server(self.config_text(with_gone=True), token=self.main_token,
                                    extra_args=("--workers", "2"))
        server.proc.wait_line(r"\b2 workers$", stream="stderr")

        # Started one after another, so the round robin puts them on workers 0, 1, 0, ...
        # The credential to be removed comes first: two of its sessions on each worker.
        # One session per client: a bulk lane would take a turn of the round robin.
        one = ("--no-lanes",)
        gone = [self.connect(server, [("dev-1", self.device.port)], token=self.gone_token,
                             extra_args=one) for _ in range(GONE_SESSIONS)]
        main = [self.connect(server, [("dev-1", self.device.port)], token=self.main_token,
                             extra_args=one) for _ in range(MAIN_SESSIONS)]
        harness.wait_until(lambda: len(self.sessions_up(server)) == len(gone) + len(main), 30,
                           "every session logged as up")
        up = self.sessions_up(server)
        per_worker = {0: 0, 1: 0}
        for _, worker in up.values():
            per_worker[worker] += 1
        self.assertEqual(per_worker, {0: 8, 1: 8}, server.proc.output())
        gone_workers = {w for cred, w in up.values() if cred == "gone"}
        self.assertEqual(gone_workers, {0, 1}, server.proc.output())

        # Streams on every main session while the config is reloaded without 'gone'.
        ports = [c.port for c in main for _ in range(STREAMS_PER_SESSION)]
        busy_before = self.device.connections
        threads, errors = self.run_transfers(ports)
        harness.wait_until(lambda: self.device.connections - busy_before >= len(ports) // 2, 60,
                           "half the transfers under way")
        self.rewrite(server, self.config_text(with_gone=False))
        mark = server.proc.mark()
        os.kill(server.proc.pid, signal.SIGHUP)
        server.proc.json_event("reloaded", after=mark)
        for c in gone:  # told why, tried again, refused: exit code 3 as for any bad token
            self.assertEqual(c.proc.wait(timeout=30), 3, c.proc.output())
            self.assertIn("no longer accepted", c.proc.output())
        with server.proc._cond:
            closed = [m.group(1) for m in map(SESSION_GONE.search, server.proc.lines["stderr"])
                      if m]
        self.assertEqual(sorted(closed), sorted(p for p, (cred, _) in up.items()
                                                if cred == "gone"))
        for t in threads:
            t.join(harness.scaled(300))
        self.assertEqual(errors, [])
        self.assertFalse(any(t.is_alive() for t in threads), "transfers still running")

        # A graceful stop while every main session has a stream the device is still
        # sending on: each finishes, on whichever worker, and then the server exits 0.
        seeds = [random.getrandbits(63) for _ in main]
        first = self.device.connections
        socks = [harness.open_source(c.port, DRAIN_DOWN, seed) for c, seed in zip(main, seeds)]
        digests = [hashlib.sha256() for _ in socks]
        try:
            for s, h in zip(socks, digests):  # every stream flows before the stop
                h.update(harness.recv_exact(s, HEAD, time.monotonic() + harness.scaled(60)))
            harness.wait_until(lambda: self.device.connections - first == len(socks), 30,
                               "every drain stream at the device")
            with self.device._lock:
                in_flight = sum(1 for st in self.device.stats[first:]
                                if st.get("sent", 0) < DRAIN_DOWN)
            self.assertGreaterEqual(in_flight, len(socks) // 2,
                                    "most streams still have bytes to send at the stop")
            print("\nin flight at the stop: %d of %d" % (in_flight, len(socks)))
            mark = server.proc.mark("stderr")
            server.proc.popen.send_signal(signal.SIGTERM)
            server.proc.wait_line(r"signal 15: stopping", stream="stderr", after=mark)
            for s, h in zip(socks, digests):
                # The rest of the stream, then its orderly end.
                deadline = time.monotonic() + harness.scaled(120)
                left = DRAIN_DOWN - HEAD
                while left:
                    chunk = harness.recv_exact(s, min(left, MiB), deadline)
                    self.assertTrue(chunk, "stream ended %d bytes short" % left)
                    h.update(chunk)
                    left -= len(chunk)
                # The device's trailer (the digests of what it sent and received), then
                # its orderly close.
                tail, how = harness.recv_until_closed(s, timeout=60)
                self.assertEqual((len(tail), how), (64, "eof"))
                self.assertEqual(tail[:32], h.digest(), "bytes differ from what the device sent")
        finally:
            for s in socks:
                s.close()
        for h, seed in zip(digests, seeds):  # every byte as the device sent it
            self.assertEqual(h.hexdigest(), harness.det_sha256(seed, DRAIN_DOWN))
        self.assertEqual(server.proc.wait(timeout=60), 0, server.proc.output())
        stopped = server.proc.wait_line(r"server stopped: (\d+) sessions served",
                                        stream="stderr", after=mark)
        served = int(re.search(r"(\d+) sessions served", stopped).group(1))
        self.assertEqual(served, GONE_SESSIONS + MAIN_SESSIONS, server.proc.output())
        for c in main:  # none of them lost its session before the stop
            self.assertEqual(len(c.proc.json_events("connected")), 1, c.proc.output())

    def test_the_number_of_workers_comes_from_the_flag_the_file_or_the_cpus(self):
        cpus = self.config_server(self.config_text(with_gone=False),
                                  extra_args=("--workers", "0"))
        line = cpus.proc.wait_line(r"\d+ workers", stream="stderr")
        self.assertRegex(line, r"\b%d workers \(one per CPU\)$" % os.cpu_count())

        filed = self.config_server(self.config_text(with_gone=False, extra="workers = 3"),
                                   token=self.main_token, extra_args=("--workers", "3"))
        filed.proc.wait_line(r"\b3 workers$", stream="stderr")
        client = self.connect(filed, [("dev-1", self.device.port)], token=self.main_token)
        harness.transfer(client.port, up=MiB, down=MiB)

        # The file says 1 now: the reload keeps the three running and says so.
        self.rewrite(filed, self.config_text(with_gone=False, extra="workers = 1"))
        mark = filed.proc.mark()
        os.kill(filed.proc.pid, signal.SIGHUP)
        filed.proc.json_event("reloaded", after=mark)
        # --workers on the command line still overrides the file, as --listen does.
        self.assertNotIn("workers changed", filed.proc.output())

    def test_a_changed_workers_key_needs_a_restart_and_says_so(self):
        # The file alone decides here, whatever TETHER_TEST_SERVER_WORKERS says.
        with mock.patch.object(harness, "SERVER_WORKERS", ""):
            server = self.config_server(self.config_text(with_gone=False, extra="workers = 3"),
                                        token=self.main_token)
        server.proc.wait_line(r"\b3 workers$", stream="stderr")
        self.rewrite(server, self.config_text(with_gone=False, extra="workers = 1"))
        mark = server.proc.mark()
        os.kill(server.proc.pid, signal.SIGHUP)
        server.proc.json_event("reloaded", after=mark)
        server.proc.wait_line(r"reload: workers changed from 3 to 1: it takes effect when the "
                              r"server is restarted", stream="stderr")
        client = self.connect(server, [("dev-1", self.device.port)], token=self.main_token)
        harness.transfer(client.port, up=MiB, down=MiB)

    def test_workers_out_of_range_is_a_usage_error(self):
        for bad in ("-1", "1025", "many"):
            r = self.run_tether("server", "--dev", "--state-dir", self.path("state"),
                                "--workers", bad)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("--workers", r.stderr)


if __name__ == "__main__":
    unittest.main()
