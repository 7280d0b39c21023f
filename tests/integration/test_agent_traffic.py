"""Traffic through an agent device (client -> server -> agent -> device port) behaves as it
does to a direct device: many concurrent streams echo every byte, half-close travels both
ways, UDP flows pass, a stalled reader holds back only its own stream and memory stays
bounded; an agent killed mid-transfer fails its streams with a reason and serves new ones
once restarted; a server restart is ridden out by both the client and the agent; a second
agent for the same device waits until the first is gone.

With TETHER_TEST_SERVER_WORKERS=2 the client's and the agent's sessions sit on different
workers (the sessions are spread in turn), which is the case the bridge is built for."""

import hashlib
import os
import socket
import threading
import time
import unittest

import harness
from harness import MiB
from test_agent import AgentFixture, refused_connection

STALLED_SEED = 7777
MAX_GROWTH_KIB = 64 * 1024
MAX_FED = 192 * MiB


class AgentTrafficTest(AgentFixture):
    def setUp(self):
        super().setUp()
        self.host = harness.device_addr(78)
        self.echo = self.echo_server(self.host)
        self.counter = self.half_close_server(self.host)
        self.source = self.sink_source_server(self.host)
        self.udp_echo = self.udp_echo_server(self.host)
        self.start_server()
        allow = ",".join(str(p) for p in (self.echo.port, self.counter.port, self.source.port,
                                          self.udp_echo.port))
        self.allow = allow
        self.agent = self.start_agent(allow, self.host)

    def test_many_concurrent_streams_echo_every_byte(self):
        client = self.connect(self.server, [(self.DEVICE, self.echo.port)])
        count = int(os.environ.get("TETHER_TEST_AGENT_STREAMS", "200"))
        harness.run_echo_clients(client.port, count, MiB, timeout=300)
        self.assertEqual(client.proc.json_events("stream_error"), [])

    def test_half_close_travels_both_ways(self):
        client = self.connect(self.server, [(self.DEVICE, self.counter.port),
                                            (self.DEVICE, self.source.port)])
        # client -> device: the device answers only once it has seen the client's EOF.
        data = os.urandom(3 * MiB + 5)
        with socket.create_connection(("127.0.0.1", client.ports[0]), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply, how = harness.recv_until_closed(s, timeout=harness.scaled(30))
        self.assertEqual(reply.decode(),
                         "%d %s\n" % (len(data), hashlib.sha256(data).hexdigest()))
        self.assertEqual(how, "eof")
        # device -> client: the device's orderly close arrives after all of its bytes.
        r = harness.transfer(client.ports[1], up=MiB, down=4 * MiB)
        self.assertEqual(r.received, 4 * MiB)

    def test_udp_echo_through_the_agent(self):
        client = self.connect_mixed(self.server, udp=[(self.DEVICE, self.udp_echo.port)])
        u = self.udp_client(client.udp_ports[0])
        for size in (0, 1, 1400, 60000):
            payload = os.urandom(size)
            got = None
            for _ in range(5):  # UDP may drop; a flow that is up answers within a try or two
                u.send(payload)
                got = u.recv(timeout=2.0)
                if got is not None:
                    break
            self.assertEqual(got, payload, "datagram of %d bytes" % size)

    def test_stalled_reader_holds_back_only_its_stream(self):
        client = self.connect(self.server, [(self.DEVICE, self.source.port)])
        harness.transfer(client.port, up=8 * MiB, down=8 * MiB)  # warm up
        procs = {"server": self.server.proc, "agent": self.agent}
        baseline = {k: p.rss_kib() for k, p in procs.items()}
        peak = dict(baseline)
        done = threading.Event()

        def sample():
            while not done.is_set():
                for k, p in procs.items():
                    peak[k] = max(peak[k], p.rss_kib())
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            stalled = harness.open_source(client.port, 1024 * MiB, seed=STALLED_SEED)
            self.addCleanup(stalled.close)
            harness.wait_until(lambda: (self.source.stats_for_seed(STALLED_SEED) or {})
                               .get("sent", 0) >= MiB, 30, "the device to feed the stalled stream")
            fed = self.source.stats_for_seed(STALLED_SEED)
            r = harness.transfer(client.port, up=0, down=64 * MiB, timeout=180)
            self.assertEqual(r.received, 64 * MiB)
            last = {"sent": -1, "since": time.monotonic()}

            def settled():
                if fed["sent"] != last["sent"]:
                    last.update(sent=fed["sent"], since=time.monotonic())
                return fed["sent"] > MAX_FED or time.monotonic() - last["since"] > 1.0

            harness.wait_until(settled, 120, "the stalled stream's sender to be held back")
        finally:
            done.set()
            sampler.join(10)
        self.assertLess(fed["sent"], MAX_FED, "the stalled stream's sender was not held back")
        for k in procs:
            self.assertLess(peak[k] - baseline[k], MAX_GROWTH_KIB,
                            "%s RSS grew from %d KiB to %d KiB" % (k, baseline[k], peak[k]))
        harness.read_expected(stalled, STALLED_SEED, 16 * MiB)

    def test_a_client_that_stops_reading_does_not_stall_the_others(self):
        """Eight streams of one client that never read hold the whole window of the agent's
        session (8 x 2 MiB): after 3 s the server resets those holding it, and another
        client's streams to the same device go on (they used to wait until the keepalive
        gave up)."""
        greedy = self.connect(self.server, [(self.DEVICE, self.source.port)])
        victim = self.connect(self.server, [(self.DEVICE, self.echo.port)])
        harness.echo_roundtrip(victim.port, os.urandom(64 * 1024), timeout=10)
        stalled = []
        for i in range(8):
            s = harness.open_source(greedy.port, 1024 * MiB, seed=STALLED_SEED + i)
            self.addCleanup(s.close)
            stalled.append(s)
        started = time.monotonic()
        harness.echo_roundtrip(victim.port, os.urandom(4 * MiB), timeout=20)
        self.assertLess(time.monotonic() - started, harness.scaled(15))
        self.server.proc.wait_for("while they held the window of a session others share",
                                  stream="stderr", timeout=20)
        # Those of the stopped reader's streams that held the window were ended (the others'
        # bytes wait in the client's own session and the kernel, which no one else shares).
        resets = [line for line in self.server.proc.lines["stderr"]
                  if "while they held the window of a session others share" in line]
        self.assertGreaterEqual(len(resets), 1)
        self.assertLessEqual(len(resets), len(stalled))

    def test_agent_killed_mid_transfer_then_restarted(self):
        client = self.connect(self.server, [(self.DEVICE, self.source.port)])
        sock = harness.open_source(client.port, 1024 * MiB, seed=99)
        self.addCleanup(sock.close)
        harness.read_expected(sock, 99, MiB)
        after = self.server.proc.mark("stderr")
        self.agent.kill()
        # The stream fails (a reset, or an early end: never a clean end of all it asked for).
        tail, how = harness.recv_until_closed(sock, timeout=harness.scaled(30))
        self.assertNotEqual(how, "timeout")
        self.assertLess(len(tail), 1024 * MiB)
        self.server.proc.wait_for(r"agent for dev-77 offline", stream="stderr", after=after)
        mark = client.proc.mark()
        refused_connection(client.port)
        ev = client.proc.json_event("stream_error", after=mark)
        self.assertEqual(ev["reason"], "unreachable")
        self.assertIn("is offline", ev["message"])
        # Restarted, it serves new streams.
        self.agent = self.start_agent(self.allow, self.host)
        r = harness.transfer(client.port, up=2 * MiB, down=2 * MiB)
        self.assertEqual(r.received, 2 * MiB)

    def test_server_restart_both_reconnect(self):
        client = self.connect(self.server, [(self.DEVICE, self.source.port)],
                              extra_args=["--retry", "forever"])
        harness.transfer(client.port, up=MiB, down=MiB)
        host, port = self.server.host, self.server.port
        client_mark = client.proc.mark()
        self.server.proc.kill()
        directory = self.server.dir
        # The same config and port again.
        listen = "%s:%d" % (host, port)
        with open(self.server.config) as f:
            text = f.read().split("\n\n", 1)[1]
        agent_mark = self.agent.mark()
        self.server = self.config_server(text, listen=listen, directory=directory,
                                         token=self.client_token)
        self.agent.json_event("connected", after=agent_mark, timeout=60)
        client.proc.json_event("connected", after=client_mark, timeout=60)
        harness.wait_until(lambda: any("agent for dev-77 online" in l
                                       for l in self.server.proc.lines["stderr"]),
                           60, "the agent back online")
        r = harness.transfer(client.port, up=2 * MiB, down=2 * MiB, timeout=120)
        self.assertEqual(r.received, 2 * MiB)

    def test_a_second_agent_waits_until_the_first_is_gone(self):
        # One agent per device: the one online stays; another with the same token is
        # refused and retries, and takes over once the first has gone.
        first = self.agent
        second = self.start_agent(self.allow, self.host, wait=False)
        ev = second.json_event("disconnected")
        self.assertIn("device dev-77 already has an agent online", ev["reason"])
        self.server.proc.wait_for(r"refused: device dev-77 already has an agent online",
                                  stream="stderr")
        client = self.connect(self.server, [(self.DEVICE, self.echo.port)])
        harness.echo_roundtrip(client.port, os.urandom(MiB))
        first.stop()
        second.json_event("connected", timeout=60)
        harness.wait_until(lambda: sum("agent for dev-77 online" in l
                                       for l in self.server.proc.lines["stderr"]) >= 2,
                           60, "the second agent online")
        harness.echo_roundtrip(client.port, os.urandom(MiB))


if __name__ == "__main__":
    unittest.main()
