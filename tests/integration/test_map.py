"""Runtime port mappings through the control socket (`tether map`, docs/CONTROL.md): real
`tether server` and `tether connect` processes, mappings added and removed while traffic
flows on others (checked by SHA-256), ports in use, draining and cutting, finding the right
client among several, sockets and folders of other users refused, stale sockets replaced,
and the line-delimited JSON protocol driven from Python's socket module directly."""

import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import threading
import time
import unittest

import harness
from harness import MiB


# A python that every user may run (the one running the tests may live in root's home).
SYSTEM_PYTHON = "/usr/bin/python3"


def nobody():
    return pwd.getpwnam("nobody")


class ControlConnection:
    """A raw control connection: one JSON request per line, one reply per line."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(harness.scaled(timeout))
        self.sock.connect(path)
        self.buf = b""

    def send_line(self, raw):
        self.sock.sendall(raw if raw.endswith(b"\n") else raw + b"\n")

    def read_line(self):
        """The next reply, or None once the client has closed the connection."""
        while b"\n" not in self.buf:
            try:
                b = self.sock.recv(65536)
            except ConnectionResetError:  # it closed with our request unread
                return None
            if not b:
                return None
            self.buf += b
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def ask(self, request):
        self.send_line(json.dumps(request).encode())
        return self.read_line()

    def close(self):
        self.sock.close()


class MapTest(harness.TetherTest):

    def setUp(self):
        super().setUp()
        # Every test has a control folder of its own, so other clients on the machine (and
        # other tests) are never "the only client running".
        self.run_dir = self.path("run")
        os.makedirs(self.run_dir, mode=0o700)
        self.cenv = self.env(XDG_RUNTIME_DIR=self.run_dir)
        self.control_dir = os.path.join(self.run_dir, "tether")

    # -- helpers --------------------------------------------------------------------------

    def server_with(self, **devices):
        return self.dev_server({k: v for k, v in devices.items()})

    def client(self, server, mappings, extra_args=()):
        return self.connect(server, mappings, extra_args=extra_args, env=self.cenv)

    def socket_of(self, client):
        path = os.path.join(self.control_dir, "%d.sock" % client.proc.pid)
        harness.wait_until(lambda: os.path.exists(path), 10, "control socket %s" % path)
        return path

    def map(self, *args, env=None, timeout=60.0):
        return self.run_tether("map", *args, env=env or self.cenv, timeout=timeout)

    def map_ok(self, *args):
        r = self.map(*args)
        self.assertEqual(r.returncode, 0, "map %s: %s%s" % (" ".join(map(str, args)), r.stdout,
                                                            r.stderr))
        return r

    def ls(self, *args):
        return json.loads(self.map_ok("ls", "--json", *args).stdout)

    def by_name(self, *args):
        return {m["name"]: m for m in self.ls(*args)}

    def add(self, *args):
        """`tether map add ARGS --json` -> the mapping object; its local port as .port."""
        m = json.loads(self.map_ok("add", *args, "--json").stdout)
        m["lport"] = harness.split_hostport(m["local"])[1]
        return m

    def assert_refuses(self, port):
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    # -- adding, listing, traffic ---------------------------------------------------------

    def test_add_transfer_and_bytes_in_ls(self):
        sink = self.sink_source_server(harness.device_addr(61))
        echo = self.echo_server(harness.device_addr(62))
        server = self.server_with(**{"dev-61": sink.host, "dev-62": echo.host})
        client = self.client(server, [("dev-62", echo.port)])

        # A default name, the real port for LPORT 0, and a listening line like -L's.
        mark = client.proc.mark()
        r = self.map_ok("add", "0:dev-61:%d" % sink.port)
        local = r.stdout.strip()
        self.assertRegex(local, r"^127\.0\.0\.1:\d+$")
        port = harness.split_hostport(local)[1]
        self.assertNotEqual(port, 0)
        client.proc.json_event("listening", after=mark, local=local, device="dev-61")

        res = harness.transfer(port, up=3 * MiB, down=5 * MiB)
        self.assertEqual((res.sent, res.received), (3 * MiB, 5 * MiB))

        name = "dev-61:%d" % sink.port
        maps = self.by_name()
        self.assertEqual(set(maps), {name, "dev-62:%d" % echo.port})
        m = maps[name]
        self.assertEqual((m["local"], m["device"], m["port"], m["proto"], m["state"]),
                         (local, "dev-61", sink.port, "tcp", "listening"))
        self.assertEqual(m["connections"], 0)
        self.assertEqual(m["total"], 1)
        # The device's header (24 bytes) went up with the payload; its trailer (64) came down.
        self.assertEqual(m["bytes_out"], 3 * MiB + 24)
        self.assertEqual(m["bytes_in"], 5 * MiB + 64)
        self.assertRegex(m["since"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(m["server"], "%s:%d" % (server.host, server.port))

        # The same target again gets a name of its own; a chosen name is kept.
        second = self.add("0:dev-61:%d" % sink.port)
        self.assertEqual(second["name"], name + "#2")
        named = self.add("sink", "0:dev-61:%d" % sink.port)
        self.assertEqual(named["name"], "sink")
        harness.transfer(named["lport"], up=MiB, down=MiB)

        # The text table: aligned columns, one row per mapping.
        table = self.map_ok("ls").stdout.splitlines()
        self.assertEqual(len(table), 5, table)
        self.assertRegex(table[0], r"^NAME\s+LOCAL\s+TARGET\s+PROTO\s+CONNS\s+OUT\s+IN\s+SINCE"
                                   r"\s+STATE$")
        starts = [line.index("127.0.0.1:") for line in table[1:]]
        self.assertEqual(len(set(starts)), 1, table)
        self.assertTrue(all(line.endswith("listening") for line in table[1:]), table)

    def test_live_bytes_while_a_connection_is_open(self):
        echo = self.echo_server(harness.device_addr(63))
        server = self.server_with(**{"dev-63": echo.host})
        client = self.client(server, [("dev-63", echo.port)])
        with socket.create_connection(("127.0.0.1", client.port), timeout=10) as s:
            s.sendall(b"x" * 100000)
            self.assertEqual(len(harness.recv_exact(s, 100000)), 100000)
            m = self.ls()[0]
            self.assertEqual(m["connections"], 1)
            self.assertEqual((m["bytes_out"], m["bytes_in"]), (100000, 100000))

    def test_udp_mapping(self):
        echo = self.udp_echo_server(harness.device_addr(64))
        tcp_echo = self.echo_server(harness.device_addr(64))
        server = self.server_with(**{"dev-64": echo.host})
        self.client(server, [("dev-64", tcp_echo.port)])
        m = self.add("dns", "0:dev-64:%d" % echo.port, "--udp")
        self.assertEqual((m["proto"], m["name"]), ("udp", "dns"))
        u = self.udp_client(m["lport"])
        for size in (0, 1, 1400, 9000):
            u.echo(bytes([size % 251]) * size, tries=3)
        got = self.by_name()["dns"]
        self.assertEqual(got["connections"], 1)  # one flow: one local source
        self.assertGreaterEqual(got["datagrams_out"], 4)
        self.assertGreaterEqual(got["datagrams_in"], 4)
        self.assertGreaterEqual(got["bytes_in"], 1 + 1400 + 9000)
        self.map_ok("rm", "dns")
        self.assertNotIn("dns", self.by_name())

    # -- refusals -------------------------------------------------------------------------

    def test_add_refusals(self):
        echo = self.echo_server(harness.device_addr(65))
        server = self.server_with(**{"dev-65": echo.host})
        client = self.client(server, [("dev-65", echo.port)])

        # A port in use: exit 1 with the address; nothing is added.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            busy = taken.getsockname()[1]
            r = self.map("add", "%d:dev-65:%d" % (busy, echo.port))
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("127.0.0.1:%d is in use" % busy, r.stderr)
        self.assertEqual(len(self.ls()), 1)

        # The port of another mapping is in use as well.
        r = self.map("add", "%d:dev-65:%d" % (client.port, echo.port))
        self.assertEqual(r.returncode, 1)
        self.assertIn("127.0.0.1:%d is in use" % client.port, r.stderr)

        # Bad specs: exit 2 with the words of -L and -U.
        for spec, words in (("abc", "-L 'abc': expected [BIND:]LPORT:DEVICE:DPORT"),
                            ("70000:dev-65:22", "local port 70000 out of range"),
                            ("0:dev-65:0", "device port 0 out of range")):
            r = self.map("add", spec)
            self.assertEqual(r.returncode, 2, spec)
            self.assertIn(words, r.stderr)
        r = self.map("add", "abc", "--udp")
        self.assertEqual(r.returncode, 2)
        self.assertIn("-U 'abc'", r.stderr)
        r = self.map("add", "bad/name", "0:dev-65:22")
        self.assertEqual(r.returncode, 2, r.stderr)

        # A duplicate name: exit 1.
        self.add("web", "0:dev-65:%d" % echo.port)
        r = self.map("add", "web", "0:dev-65:%d" % echo.port)
        self.assertEqual(r.returncode, 1)
        self.assertIn("a mapping named 'web' exists", r.stderr)

        # No such mapping to remove: exit 1.
        r = self.map("rm", "nothing-here")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no mapping", r.stderr)

        # --check asks the server: an unknown device is refused before add says yes.
        r = self.map("add", "0:dev-nope:22", "--check")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown device", r.stderr)
        self.assertEqual(set(self.by_name()), {"dev-65:%d" % echo.port, "web"})
        before = echo.connections
        self.add("checked", "0:dev-65:%d" % echo.port, "--check")
        harness.wait_until(lambda: echo.connections == before + 1, 10,
                           "the check's one connection at the device")

    def test_failed_state_after_a_refused_stream(self):
        echo = self.echo_server(harness.device_addr(66))
        server = self.server_with(**{"dev-66": echo.host})
        self.client(server, [("dev-66", echo.port)])
        m = self.add("ghost", "0:dev-ghost:22")
        try:
            with socket.create_connection(("127.0.0.1", m["lport"]), timeout=10) as s:
                _, how = harness.recv_until_closed(s)
        except ConnectionResetError:  # so soon that the connect itself saw it
            how = "reset"
        self.assertEqual(how, "reset")
        got = self.by_name()["ghost"]
        self.assertEqual(got["state"], "failed")
        self.assertIn("unknown device", got["error"])
        self.assertRegex(self.map_ok("ls").stdout, r"ghost .*failed: unknown device")

    # -- removing -------------------------------------------------------------------------

    def test_rm_during_a_transfer_on_another_mapping(self):
        sink = self.sink_source_server(harness.device_addr(67))
        echo = self.echo_server(harness.device_addr(68))
        server = self.server_with(**{"dev-67": sink.host, "dev-68": echo.host})
        client = self.client(server, [("dev-67", sink.port), ("dev-68", echo.port)])
        echo_name = "dev-68:%d" % echo.port
        extra = []

        def add_and_use(i):
            m = self.add("extra%d" % i, "0:dev-68:%d" % echo.port)
            harness.echo_roundtrip(m["lport"], os.urandom(200000))
            extra.append(m)

        # Between the megabytes of a download in flight: add, use, list and remove other
        # mappings, by name, by address and by bare port. The download is read at our pace,
        # so every change happens while its bytes are on the way.
        changes = [lambda: add_and_use(0), lambda: add_and_use(1), lambda: add_and_use(2),
                   lambda: self.assertEqual(len(self.ls()), 5),
                   lambda: self.map_ok("rm", extra[0]["name"]),
                   lambda: self.map_ok("rm", extra[1]["local"]),
                   lambda: self.map_ok("rm", str(extra[2]["lport"])),
                   lambda: self.map_ok("rm", echo_name, "--now")]
        total = 48 * MiB
        seed = 4242
        deadline = time.monotonic() + harness.scaled(120)
        with harness.open_source(client.ports[0], total, seed) as s:
            for i, expected in enumerate(harness.det_chunks(seed, total)):
                got = harness.recv_exact(s, len(expected), deadline)
                self.assertEqual(got, expected, "chunk %d of the download differs" % i)
                if i < len(changes):
                    changes[i]()
            trailer = harness.recv_exact(s, 64, deadline)
            self.assertEqual(trailer[:32].hex(), harness.det_sha256(seed, total))
            rest, how = harness.recv_until_closed(s)
            self.assertEqual((rest, how), (b"", "eof"))

        for m in extra:
            self.assert_refuses(m["lport"])
        self.assert_refuses(client.ports[1])
        m = self.by_name()
        self.assertEqual(list(m), ["dev-67:%d" % sink.port])
        self.assertEqual(m["dev-67:%d" % sink.port]["bytes_in"], total + 64)
        self.assertEqual(m["dev-67:%d" % sink.port]["bytes_out"], 24)

        # The other direction too: an upload and a download at once, after all that.
        harness.transfer(client.ports[0], up=8 * MiB, down=8 * MiB)

    def test_rm_drains_and_rm_now_cuts(self):
        echo = self.echo_server(harness.device_addr(69))
        server = self.server_with(**{"dev-69": echo.host})
        self.client(server, [("dev-69", echo.port)])

        # Without --now the open connection goes on after its port stopped listening.
        gentle = self.add("gentle", "0:dev-69:%d" % echo.port)
        with socket.create_connection(("127.0.0.1", gentle["lport"]), timeout=10) as s:
            s.sendall(b"before")
            self.assertEqual(harness.recv_exact(s, 6), b"before")
            r = self.map_ok("rm", "gentle")
            self.assertIn("removed gentle", r.stdout)
            self.assertIn("1 connection left to drain", r.stdout)
            self.assert_refuses(gentle["lport"])
            s.sendall(b"after")
            self.assertEqual(harness.recv_exact(s, 5), b"after")
            s.shutdown(socket.SHUT_WR)
            rest, how = harness.recv_until_closed(s)
            self.assertEqual((rest, how), (b"", "eof"))
        # The name is free again at once.
        self.add("gentle", "0:dev-69:%d" % echo.port)

        # With --now it is reset, both locally and at the device.
        harness.wait_until(lambda: echo.active == 0, 10, "the device connection to end")
        rough = self.add("rough", "0:dev-69:%d" % echo.port)
        with socket.create_connection(("127.0.0.1", rough["lport"]), timeout=10) as s:
            s.sendall(b"ping")
            self.assertEqual(harness.recv_exact(s, 4), b"ping")
            self.assertEqual(echo.active, 1)
            r = self.map_ok("rm", "rough", "--now")
            self.assertIn("1 connection reset", r.stdout)
            _, how = harness.recv_until_closed(s, timeout=10)
            self.assertEqual(how, "reset")
        harness.wait_until(lambda: echo.active == 0, 10, "the device connection to be cut")
        self.assert_refuses(rough["lport"])

    # -- finding the client ---------------------------------------------------------------

    def test_several_clients_need_pid_or_control(self):
        echo = self.echo_server(harness.device_addr(70))
        server = self.server_with(**{"dev-70": echo.host})
        a = self.client(server, [("dev-70", echo.port)])
        b = self.client(server, ["0:dev-70:%d" % echo.port, "0:dev-70:%d" % echo.port])
        a_sock, b_sock = self.socket_of(a), self.socket_of(b)

        r = self.map("ls")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("several tether clients", r.stderr)
        for c in (a, b):
            self.assertIn("--pid %d" % c.proc.pid, r.stderr)
        self.assertIn("--control", r.stderr)

        self.assertEqual(len(self.ls("--pid", a.proc.pid)), 1)
        self.assertEqual(len(self.ls("--pid", b.proc.pid)), 2)
        self.assertEqual(len(self.ls("--control", b_sock)), 2)
        m = self.add("only-a", "0:dev-70:%d" % echo.port, "--pid", a.proc.pid)
        harness.echo_roundtrip(m["lport"], b"through a")
        self.assertIn("only-a", self.by_name("--pid", a.proc.pid))
        self.assertNotIn("only-a", self.by_name("--control", b_sock))
        r = self.map("ls", "--pid", 999999999)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no control socket", r.stderr)

        # Each client removes its socket when it stops; then the other is the only one.
        self.assertEqual(a.proc.stop(), 0)
        self.assertFalse(os.path.exists(a_sock))
        self.assertEqual(len(self.ls()), 2)
        self.assertEqual(b.proc.stop(), 0)
        self.assertFalse(os.path.exists(b_sock))
        r = self.map("ls")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no running tether client", r.stderr)

    def test_stale_sockets_are_skipped_and_replaced(self):
        echo = self.echo_server(harness.device_addr(71))
        server = self.server_with(**{"dev-71": echo.host})
        dead = self.client(server, [("dev-71", echo.port)])
        dead_sock = self.socket_of(dead)
        dead.proc.kill()
        self.assertTrue(os.path.exists(dead_sock), "a killed client leaves its socket")
        live = self.client(server, [("dev-71", echo.port)])
        self.assertEqual(len(self.ls()), 1)  # the dead one does not count as a second client
        self.assertFalse(os.path.exists(dead_sock), "the stale socket was removed")
        live.proc.stop()

        # At an explicit path: a stale socket is replaced, a live one refused.
        path = self.path("ctl.sock")
        first = self.client(server, [("dev-71", echo.port)], extra_args=("--control", path))
        first.proc.kill()
        second = self.client(server, [("dev-71", echo.port)], extra_args=("--control", path))
        self.assertEqual(len(self.ls("--control", path)), 1)
        r = self.run_tether("connect", server.url, "--ca", server.ca, "--token-file",
                            server.token_file, "-L", "0:dev-71:%d" % echo.port, "--control",
                            path, env=self.cenv)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("in use by another running tether", r.stderr)
        self.assertEqual(second.proc.stop(), 0)
        self.assertFalse(os.path.exists(path))

    # -- other users ----------------------------------------------------------------------

    @unittest.skipUnless(os.geteuid() == 0, "needs root to chown to another user")
    def test_folder_or_socket_of_another_user_refused(self):
        echo = self.echo_server(harness.device_addr(72))
        server = self.server_with(**{"dev-72": echo.host})
        theirs = self.path("theirs")
        os.makedirs(theirs, mode=0o700)
        os.chown(theirs, nobody().pw_uid, nobody().pw_gid)
        base = ["connect", server.url, "--ca", server.ca, "--token-file", server.token_file,
                "-L", "0:dev-72:%d" % echo.port]

        # connect: an explicit --control in their folder, and a default folder of theirs.
        r = self.run_tether(*base, "--control", os.path.join(theirs, "c.sock"), env=self.cenv)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("belongs to uid %d" % nobody().pw_uid, r.stderr)
        xdg = self.path("xdg")
        os.makedirs(os.path.join(xdg, "tether"), mode=0o700)
        os.chown(os.path.join(xdg, "tether"), nobody().pw_uid, nobody().pw_gid)
        r = self.run_tether(*base, env=self.env(XDG_RUNTIME_DIR=xdg))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("belongs to uid %d" % nobody().pw_uid, r.stderr)
        # A default folder others may write to is refused too.
        os.chown(os.path.join(xdg, "tether"), 0, 0)
        os.chmod(os.path.join(xdg, "tether"), 0o777)
        r = self.run_tether(*base, env=self.env(XDG_RUNTIME_DIR=xdg))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("chmod 700", r.stderr)

        # map: a live client's socket moved into their folder, and a socket of theirs.
        client = self.client(server, [("dev-72", echo.port)])
        sock = self.socket_of(client)
        moved = os.path.join(theirs, "moved.sock")
        os.link(sock, moved)
        r = self.map("ls", "--control", moved)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("'%s' belongs to uid %d" % (theirs, nobody().pw_uid), r.stderr)
        os.chown(sock, nobody().pw_uid, nobody().pw_gid)
        r = self.map("ls")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)  # not ours: not a client of ours
        r = self.map("ls", "--control", sock)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("control socket '%s' belongs to uid %d" % (sock, nobody().pw_uid),
                      r.stderr)

    @unittest.skipUnless(os.geteuid() == 0 and os.access(SYSTEM_PYTHON, os.X_OK),
                         "needs root, and a python that another user may run")
    def test_peer_of_another_uid_refused(self):
        echo = self.echo_server(harness.device_addr(73))
        server = self.server_with(**{"dev-73": echo.host})
        # A folder and socket everyone may reach, so that only the peer check stands between.
        os.chmod(self.tmp, 0o755)
        shared = self.path("shared")
        os.makedirs(shared, mode=0o755)
        os.chmod(shared, 0o755)
        path = os.path.join(shared, "c.sock")
        self.client(server, [("dev-73", echo.port)], extra_args=("--control", path))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        os.chmod(path, 0o666)
        # The refusal comes unasked, so the other user only reads (a request could meet a
        # closed socket).
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
                "buf=b''\n"
                "while True:\n"
                "    b=s.recv(65536)\n"
                "    if not b: break\n"
                "    buf+=b\n"
                "sys.stdout.write(buf.decode())\n")
        r = subprocess.run([SYSTEM_PYTHON, "-c", code, path], capture_output=True, text=True,
                           user=nobody().pw_uid, timeout=harness.scaled(20))
        self.assertEqual(r.returncode, 0, r.stderr)
        reply = json.loads(r.stdout.splitlines()[0])
        self.assertEqual((reply["ok"], reply["error"]), (False, "forbidden"))
        # The owner is still served.
        self.assertEqual(len(self.ls("--control", path)), 1)

    # -- the protocol itself --------------------------------------------------------------

    def test_raw_json_protocol(self):
        echo = self.echo_server(harness.device_addr(74))
        server = self.server_with(**{"dev-74": echo.host})
        client = self.client(server, [("dev-74", echo.port)])
        conn = ControlConnection(self.socket_of(client))
        self.addCleanup(conn.close)

        info = conn.ask({"op": "info", "id": "i-1"})
        self.assertEqual((info["ok"], info["id"], info["pid"]), (True, "i-1", client.proc.pid))
        self.assertEqual(info["servers"], ["%s:%d" % (server.host, server.port)])

        added = conn.ask({"op": "add", "spec": "0:dev-74:%d" % echo.port, "name": "raw", "id": 7})
        self.assertEqual((added["ok"], added["id"]), (True, 7))
        port = harness.split_hostport(added["mapping"]["local"])[1]
        harness.echo_roundtrip(port, b"x" * 5000)

        # Malformed requests are answered and the connection goes on.
        for raw, words in ((b"this is not json", "malformed JSON"),
                           (b"[1, 2]", "JSON object"),
                           (b"{\"op\": 5}", "field 'op' must be a string"),
                           (b"{\"op\": \"dance\"}", "unknown op 'dance'"),
                           (b"{\"op\": \"add\"}", "missing field 'spec'"),
                           (b"{\"op\": \"rm\", \"mapping\": 1}", "must be a string"),
                           (b"{\"op\": \"add\", \"spec\": \"x\", \"check\": \"yes\"}",
                            "must be true or false"),
                           (b"\xff\xfe{}", "malformed JSON")):
            conn.send_line(raw)
            reply = conn.read_line()
            self.assertEqual((reply["ok"], reply["error"]), (False, "bad_request"), raw)
            self.assertIn(words, reply["message"], raw)
        bad = conn.ask({"op": "add", "spec": "nope"})
        self.assertEqual((bad["ok"], bad["error"]), (False, "bad_spec"))

        # Several requests in one write get their answers in order.
        conn.send_line(b'{"op":"ls","id":1}\n\n{"op":"rm","mapping":"raw","id":2}\n'
                       b'{"op":"rm","mapping":"raw","id":3}')
        replies = [conn.read_line() for _ in range(3)]
        self.assertEqual([r["id"] for r in replies], [1, 2, 3])
        self.assertIn("raw", [m["name"] for m in replies[0]["mappings"]])
        self.assertTrue(replies[1]["ok"])
        self.assertEqual(replies[1]["mapping"]["bytes_out"], 5000)
        self.assertEqual(replies[2]["error"], "not_found")

        # A line past the bound is refused and ends that connection, and only that one.
        big = ControlConnection(self.socket_of(client))
        self.addCleanup(big.close)
        big.send_line(b"{\"op\":\"ls\",\"pad\":\"" + b"x" * (70 * 1024) + b"\"}")
        reply = big.read_line()
        self.assertEqual(reply["error"], "bad_request")
        self.assertIn("longer than 65536 bytes", reply["message"])
        self.assertIsNone(big.read_line())
        self.assertTrue(conn.ask({"op": "ls"})["ok"])
        harness.echo_roundtrip(client.port, b"still fine")
        self.assertTrue(client.proc.running())


if __name__ == "__main__":
    unittest.main()
