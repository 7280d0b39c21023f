"""UDP through the tunnel (`tether connect -U`): real datagram services on device addresses
(dnsmasq queried with dig, an echo service, socat), whole datagrams of every size, one flow
per local source, idle expiry, the flow bound, refused ports, the access list, and a UDP
flood beside a TCP transfer on the same session."""

import hashlib
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import unittest

import harness
from harness import MAX_DATAGRAM, MiB

# Every datagram of the echo load starts with its source's index and its sequence number
# (what is left of them, for datagrams shorter than the header), so a reply that reached the
# wrong source says so.
HEADER = struct.Struct("!BI")


class EchoLoad:
    """`sources` local UDP sources at once, each sending `per_source` datagrams of random
    sizes 0..65,507 to an echo service through `port`, one in flight at a time: send, wait
    for the echo (resend after `wait` s, at most `tries` times in all), compare it byte for
    byte. Outcome: lost (never echoed), wrong_source, corrupt, duplicates (late echoes of
    resent datagrams), resends, bytes each way."""

    def __init__(self, port, sources, per_source, seed, wait=2.0, tries=5):
        self.port, self.sources, self.per_source = port, sources, per_source
        self.seed, self.wait, self.tries = seed, wait, tries
        self.block = random.Random(seed).randbytes(2 * MAX_DATAGRAM)
        self.lock = threading.Lock()
        self.lost, self.wrong_source, self.corrupt = [], [], []
        self.duplicates = self.resends = self.echoed = self.bytes = 0
        self.errors = []

    def payload(self, src, seq, size):
        offset = (src * 7919 + seq * 104729) % MAX_DATAGRAM
        return (HEADER.pack(src, seq) + self.block[offset:offset + size])[:size]

    def sizes(self, src):
        r = random.Random(self.seed * 31 + src)
        return [r.randint(0, MAX_DATAGRAM) for _ in range(self.per_source)]

    def run(self, timeout):
        deadline = time.monotonic() + harness.scaled(timeout)
        threads = [threading.Thread(target=self._source, args=(i, deadline), daemon=True)
                   for i in range(self.sources)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 5)
        self.seconds = time.monotonic() - start
        if any(t.is_alive() for t in threads):
            raise AssertionError("the sources were still busy after %.1f s"
                                 % harness.scaled(timeout))
        if self.errors:
            raise AssertionError(self.errors[0])

    def _classify(self, src, got, resent):
        """A datagram that is not the awaited echo: a late duplicate, a stranger, or junk."""
        if hashlib.sha256(got).digest() in resent:
            return "duplicate"
        if got and got[0] != src:
            return "wrong_source"
        return "corrupt"

    def _source(self, src, deadline):
        try:
            sock = harness._udp_socket("127.0.0.1")
            sock.bind(("127.0.0.1", 0))
            sock.connect(("127.0.0.1", self.port))
        except OSError as e:
            self.errors.append("source %d: %r" % (src, e))
            return
        resent = set()  # digests of datagrams sent more than once: their late echoes are fine
        sizes = self.sizes(src)
        try:
            for seq, size in enumerate(sizes):
                data = self.payload(src, seq, size)
                done = False
                for attempt in range(self.tries):
                    if time.monotonic() > deadline:
                        raise TimeoutError("deadline passed at datagram %d of %d"
                                           % (seq, len(sizes)))
                    if attempt:
                        resent.add(hashlib.sha256(data).digest())
                        with self.lock:
                            self.resends += 1
                    sock.send(data)
                    wait_until = time.monotonic() + harness.scaled(self.wait)
                    while not done:
                        left = wait_until - time.monotonic()
                        if left <= 0:
                            break
                        sock.settimeout(left)
                        try:
                            got = sock.recv(MAX_DATAGRAM + 1)
                        except socket.timeout:
                            break
                        if got == data:
                            done = True
                            break
                        kind = self._classify(src, got, resent)
                        with self.lock:
                            if kind == "duplicate":
                                self.duplicates += 1
                            else:
                                getattr(self, kind).append(
                                    (src, seq, len(got), got[:HEADER.size].hex()))
                    if done:
                        break
                with self.lock:
                    if done:
                        self.echoed += 1
                        self.bytes += size
                    else:
                        self.lost.append((src, seq, size))
        except (OSError, TimeoutError) as e:
            self.errors.append("source %d: %r" % (src, e))
        finally:
            sock.close()

    def summary(self):
        return ("%d datagrams echoed (%.0f MiB each way) in %.1f s from %d sources; resends %d, "
                "late duplicates %d, lost %d, wrong source %d, corrupt %d"
                % (self.echoed, self.bytes / MiB, self.seconds, self.sources, self.resends,
                   self.duplicates, len(self.lost), len(self.wrong_source), len(self.corrupt)))


# A UDP flood in a process of its own (no lock shared with the test's threads): sends
# SIZE-byte datagrams to 127.0.0.1:PORT as fast as the socket takes them until SIGTERM,
# then prints how many it sent. Nobody reads the replies.
FLOOD = r"""
import signal, socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.connect(("127.0.0.1", port))
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
payload, sent = b"f" * size, 0
print("flooding", flush=True)
while not stopping:
    try:
        s.send(payload)
        sent += 1
    except (BlockingIOError, ConnectionRefusedError):
        pass
print("sent=%d" % sent, flush=True)
"""


class UdpTest(harness.TetherTest):
    def device(self, n):
        return harness.device_addr(n)

    def echo_setup(self, n, extra_args=(), json=True):
        """A UDP echo service on device n, a --dev server and a client with -U to it."""
        self.echo = self.udp_echo_server(self.device(n))
        self.server = self.dev_server(devices={"dev-echo": self.echo.host})
        self.client = self.connect_mixed(self.server, udp=[("dev-echo", self.echo.port)],
                                         extra_args=extra_args, json=json)
        return self.client.udp_ports[0]

    def expect_closed(self, port):
        """A local TCP connection that tether closes without a byte (a reset may even beat
        connect() back)."""
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionResetError:
            return
        with s:
            data, _ = harness.recv_until_closed(s, timeout=10)
        self.assertEqual(data, b"")

    def assert_session_intact(self, client):
        self.assertTrue(client.proc.running(), "tether connect exited")
        self.assertEqual(len(client.proc.json_events("connected")), 1)
        self.assertEqual(client.proc.json_events("disconnected"), [])

    # -- real services -------------------------------------------------------------------------

    def test_dnsmasq_answers_dig_through_the_tunnel(self):
        records = {"dev-42.tether.test": "10.42.0.1", "printer.tether.test": "10.42.0.7",
                   "gateway.tether.test": "10.42.0.254"}
        dns = self.dnsmasq(self.device(60), records)
        server = self.dev_server(devices={"dev-dns": dns.host})
        client = self.connect_mixed(server, udp=[("dev-dns", dns.port)])
        port = client.udp_ports[0]

        # dig takes a new source port each time: every query opens a flow, and its first
        # datagram must not be lost while the flow opens (+tries=1: dig never asks twice).
        asked = 0
        for name in list(records) * 3:
            with self.subTest(name=name, query=asked):
                answers, seconds = harness.dig(port, name, timeout=5)
                asked += 1
                self.assertEqual(answers, [records[name]])
                self.assertLess(seconds, harness.scaled(1.0), "the answer was not at once")
        harness.wait_until(lambda: dns.queries() >= asked, 5, "dnsmasq to log every query")
        self.assertEqual(dns.queries(), asked, "each query reached dnsmasq exactly once")
        self.assert_session_intact(client)

    def test_ten_thousand_datagrams_of_random_sizes_from_four_sources(self):
        port = self.echo_setup(61)
        seed = random.getrandbits(32)
        load = EchoLoad(port, sources=4, per_source=2500, seed=seed)
        load.run(timeout=300)
        print("\n%s (seed %d)" % (load.summary(), seed))
        self.assertEqual(load.wrong_source, [], "echoes delivered to another source")
        self.assertEqual(load.corrupt, [], "echoes that match no datagram sent")
        self.assertEqual(load.lost, [], "datagrams never echoed after %d tries" % load.tries)
        self.assertEqual(load.echoed, 10000)
        # one flow per local source, all of them still the first: none expired or was evicted
        self.assertEqual(self.echo.flows(), 4)
        self.assertEqual(self.echo.errors, [])
        self.assert_session_intact(self.client)

    def test_datagrams_at_the_size_edges_travel_whole(self):
        port = self.echo_setup(62)
        source = self.udp_client(port)
        for size in (0, 1, 2, 4, 5, 512, 1400, 1472, 1473, 8192, 65506, MAX_DATAGRAM):
            with self.subTest(size=size):
                data = os.urandom(size)
                self.assertEqual(source.echo(data, tries=3), data)
                source.drain()  # late echoes of a resend
        # The largest twice more, the empty one twice more: each is one datagram both ways.
        big = os.urandom(MAX_DATAGRAM)
        for data in (big, b"", big, b""):
            source.send(data)
            self.assertEqual(source.recv(5), data)
        self.assertEqual(self.echo.flows(), 1)
        self.assertEqual(source.drain(), [], "one echo per datagram")

    # -- the listening line --------------------------------------------------------------------

    def test_listening_event_names_udp(self):
        echo = self.udp_echo_server(self.device(63))
        server = self.dev_server(devices={"dev-63": echo.host})
        client = self.connect_mixed(server, udp=[("dev-63", 53), ("dev-63", echo.port)],
                                    tcp=[("dev-63", 53)])
        events = client.proc.json_events("listening")
        udp = [e for e in events if e.get("proto") == "udp"]
        tcp = [e for e in events if e.get("proto") == "tcp"]
        self.assertEqual(len(udp), 2, events)
        self.assertEqual(len(tcp), 1, events)
        dns = [e for e in udp if e.get("port") == 53]
        self.assertRegex(dns[0].pop("time"), r"^\d{4}-\d\d-\d\dT[\d:.]+Z$")
        self.assertEqual(dns[0], {"event": "listening", "name": "dev-63:53/udp", "proto": "udp",
                                  "local": "127.0.0.1:%d" % client.udp_ports[0],
                                  "device": "dev-63", "port": 53,
                                  "server": "127.0.0.1:%d" % server.port})
        # the listener is a UDP socket: a datagram to it is answered through the tunnel
        source = self.udp_client(client.udp_ports[1])
        self.assertEqual(source.echo(b"hello, udp", tries=3), b"hello, udp")

    def test_listening_text_names_udp(self):
        server = self.dev_server(devices={"dev-64": self.device(64)})
        client = self.connect_mixed(server, udp=["0:dev-64:53", "127.0.0.1:0:dev-64:5683"],
                                    json=False)
        lines = [line for line in client.proc.lines["stdout"] if line.startswith("listening")]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("listening 127.0.0.1:%d -> dev-64:53 udp" % client.udp_ports[0], lines)
        self.assertIn("listening 127.0.0.1:%d -> dev-64:5683 udp" % client.udp_ports[1], lines)

    # -- flows: idle expiry, the bound, refusals -------------------------------------------------

    def flow_lines(self, server, device, port, what):
        """Lines of the server's debug log about flows to device:port that `what` (open or
        ended)."""
        pattern = {"open": r"stream %s:%d/udp open for" % (device, port),
                   "ended": r"flow %s:%d/udp for '[^']*' ended" % (device, port)}[what]
        return [line for line in server.proc.lines["stderr"] if re.search(pattern, line)]

    def assert_idle_expiry(self, server, client, echo, device, idle_s):
        """Two datagrams in a row are one flow; after `idle_s` without one, the flow ends
        (the server logs it, not before `idle_s`), and the next datagram opens a new one."""
        source = self.udp_client(client.udp_ports[0])
        source.echo(b"first", tries=3)
        source.echo(b"second, within the idle time", tries=3)
        last = time.monotonic()
        self.assertEqual(echo.flows(), 1, "two datagrams in a row are one flow")
        # The server's log line may come a moment after the echo did.
        opened = lambda: len(self.flow_lines(server, device, echo.port, "open"))
        harness.wait_until(lambda: opened() >= 1, 10, "the server to log the flow")
        self.assertEqual(opened(), 1)

        harness.wait_until(lambda: self.flow_lines(server, device, echo.port, "ended"),
                           idle_s + 5, "the server to log the end of the idle flow")
        self.assertGreaterEqual(time.monotonic() - last, idle_s * 0.9,
                                "the flow ended before its idle time")
        source.echo(b"after the idle time", tries=3)
        self.assertEqual(echo.flows(), 2, "the next datagram opens a new flow")
        harness.wait_until(lambda: opened() >= 2, 10, "the server to log the second flow")
        self.assertEqual(opened(), 2)
        self.assertEqual(client.proc.json_events("stream_error"), [],
                         "an idle flow ends quietly")
        self.assert_session_intact(client)

    def test_client_idle_expiry_ends_the_flow_and_the_next_datagram_opens_one(self):
        echo = self.udp_echo_server(self.device(65))
        server = self.dev_server(devices={"dev-65": echo.host},
                                 extra_args=["--log-level", "debug"])
        client = self.connect_mixed(server, udp=[("dev-65", echo.port)],
                                    extra_args=["--udp-idle", "1"])
        self.assert_idle_expiry(server, client, echo, "dev-65", idle_s=1.0)

    def test_server_idle_timeout_ends_the_flow_and_the_next_datagram_opens_one(self):
        echo = self.udp_echo_server(self.device(66))
        token, digest = harness.new_token()
        server = self.config_server(
            "udp_idle_timeout_ms = 1000\n\n"
            + harness.credential_toml("laptop", digest, ["dev-66:*"])
            + harness.device_toml("dev-66", echo.host),
            token=token, extra_args=["--log-level", "debug"])
        client = self.connect_mixed(server, udp=[("dev-66", echo.port)])  # client: 60 s
        self.assert_idle_expiry(server, client, echo, "dev-66", idle_s=1.0)

    def test_flow_bound_evicts_the_least_recently_used_flow(self):
        socat = self.socat_udp_echo(self.device(67))
        server = self.dev_server(devices={"dev-67": socat.host})
        client = self.connect_mixed(server, udp=[("dev-67", socat.port)],
                                    extra_args=["--udp-max-flows", "2"])
        a, b, c = (self.udp_client(client.udp_ports[0]) for _ in range(3))

        def flows(n, what):
            harness.wait_until(lambda: len(socat.peers()) >= n, 5, what)
            time.sleep(0.2)  # and no more than that
            self.assertEqual(len(socat.peers()), n, what)
            socat.wait_listening()

        a.echo(b"a1", tries=3)
        b.echo(b"b1", tries=3)
        c.echo(b"c1", tries=3)  # a third source past the bound of 2: answered, evicts a
        flows(3, "a flow per source")
        b.echo(b"b2", tries=3)  # b was not evicted (a was the least recently used)
        flows(3, "b keeps its flow")
        a.echo(b"a2", tries=3)  # a's flow was evicted: a new one, which evicts c
        flows(4, "a new flow for the evicted source")
        c.echo(b"c2", tries=3)  # c was the least recently used: it has a new flow too
        flows(5, "a new flow for the source evicted second")
        b.echo(b"b3", tries=3)  # c's new flow evicted b, by then the least recently used
        flows(6, "a new flow for the source evicted third")
        self.assertEqual(client.proc.json_events("stream_error"), [],
                         "eviction is not an error")
        self.assert_session_intact(client)

    def test_refused_port_reports_once_per_flow(self):
        addr = self.device(68)
        closed = harness.free_udp_port(addr)  # nothing listens there
        server = self.dev_server(devices={"dev-68": addr})
        client = self.connect_mixed(server, udp=[("dev-68", closed)])
        source = self.udp_client(client.udp_ports[0])

        source.send(b"anyone there?")
        ev = client.proc.json_event("stream_error", reason="refused")
        self.assertEqual((ev["device"], ev["port"]), ("dev-68", closed))
        self.assertIsNone(source.recv(0.5), "no reply from a closed port")
        self.assertEqual(len(client.proc.json_events("stream_error")), 1, "reported once")

        # the flow has ended; the next datagram from the same source opens a new one
        mark = client.proc.mark()
        source.send(b"and now?")
        client.proc.json_event("stream_error", after=mark, reason="refused")
        time.sleep(0.5)
        self.assertEqual(len(client.proc.json_events("stream_error")), 2)
        self.assert_session_intact(client)

    # -- the access list -----------------------------------------------------------------------

    def test_acl_udp_and_tcp_patterns_are_each_enforced(self):
        addr = self.device(69)
        echo = self.udp_echo_server(addr)
        tcp_echo = self.echo_server(addr)
        udp_only, udp_digest = harness.new_token()
        tcp_only, tcp_digest = harness.new_token()
        server = self.config_server(
            harness.credential_toml("udp-only", udp_digest, ["dev-1:%d/udp" % echo.port])
            + harness.credential_toml("tcp-only", tcp_digest,
                                      ["dev-1:%d/tcp" % echo.port,
                                       "dev-1:%d/tcp" % tcp_echo.port])
            + harness.device_toml("dev-1", addr),
            token=udp_only)

        # "dev-1:P/udp": UDP to P works, TCP to P is forbidden
        client = self.connect_mixed(server, udp=[("dev-1", echo.port)],
                                    tcp=[("dev-1", echo.port)], token=udp_only)
        self.udp_client(client.udp_ports[0]).echo(b"allowed", tries=3)
        self.expect_closed(client.tcp_ports[0])
        ev = client.proc.json_event("stream_error", port=echo.port)
        self.assertEqual(ev["reason"], "forbidden")
        self.assertEqual(tcp_echo.connections, 0)

        # "dev-1:P/tcp": UDP to P is forbidden, TCP works
        before = echo.count()
        client = self.connect_mixed(server, udp=[("dev-1", echo.port)],
                                    tcp=[("dev-1", tcp_echo.port)], token=tcp_only)
        source = self.udp_client(client.udp_ports[0])
        source.send(b"not allowed")
        ev = client.proc.json_event("stream_error", port=echo.port)
        self.assertEqual(ev["reason"], "forbidden")
        self.assertIsNone(source.recv(0.5))
        self.assertEqual(echo.count(), before, "the device never saw the forbidden datagram")
        harness.echo_roundtrip(client.tcp_ports[0], b"tcp is allowed")

    # -- the command line ----------------------------------------------------------------------

    def test_udp_with_ssh_is_a_usage_error(self):
        r = self.run_tether("connect", "ssh://someone@127.0.0.1:9", "-U", "0:dev-1:53",
                            timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("-U", r.stderr)
        self.assertIn("SSH", r.stderr)

    def test_bad_udp_options_are_usage_errors(self):
        usage = self.run_tether("connect", "--help").stdout
        for option in ("-U", "--udp-idle", "--udp-max-flows"):
            self.assertIn(option, usage)
        for args, word in ((["--udp-idle", "0"], "--udp-idle"),
                           (["--udp-idle", "-3"], "--udp-idle"),
                           (["--udp-max-flows", "0"], "--udp-max-flows")):
            with self.subTest(args=args):
                r = self.run_tether("connect", "tls://127.0.0.1:9", "--token", "t",
                                    "-U", "0:dev-1:53", *args, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(word, r.stderr)
                self.assertNotIn("not expected", r.stderr)

    # -- sharing the session -------------------------------------------------------------------

    def test_tcp_transfer_beside_a_udp_flood(self):
        addr = self.device(70)
        bulk = self.sink_source_server(addr)
        sink = self.udp_sink_server(addr)
        echo = self.udp_echo_server(addr)
        server = self.dev_server(devices={"dev-70": addr})
        client = self.connect_mixed(server, udp=[("dev-70", sink.port), ("dev-70", echo.port)],
                                    tcp=[("dev-70", bulk.port)])
        tcp_port = client.tcp_ports[0]

        quiet = harness.transfer(tcp_port, up=16 * MiB, down=16 * MiB, timeout=60)
        flood = self.start([sys.executable, "-c", FLOOD, client.udp_ports[0], 1400],
                           name="udp-flood")
        flood.wait_line("^flooding$")
        harness.wait_until(lambda: sink.count() > 1000, 10, "the flood to reach the device")
        r = harness.transfer(tcp_port, up=64 * MiB, down=64 * MiB, timeout=60)
        self.assertEqual(flood.stop(), 0)
        sent = int(flood.wait_line(r"^sent=\d+$").split("=")[1])
        arrived = sink.count()
        print("\nTCP 64 MiB each way in %.1f s beside a UDP flood (16 MiB alone: %.1f s); "
              "flood: %d datagrams of 1400 B sent, %d reached the device"
              % (r.seconds, quiet.seconds, sent, arrived))
        self.assertEqual((r.sent, r.received), (64 * MiB, 64 * MiB))
        self.assertLessEqual(arrived, sent)
        self.assertEqual(bulk.errors, [])
        self.assertTrue(client.proc.running(), "tether connect exited")

        # the tunnel still carries UDP afterwards
        source = self.udp_client(client.udp_ports[1])
        self.assertEqual(source.echo(b"after the flood", tries=5), b"after the flood")
        self.assert_session_intact(client)


if __name__ == "__main__":
    unittest.main()
