"""`tether up -f FILE` (docs/TUNNELS.md): named tunnels to several devices and servers from one
file, real ssh and curl through them, `tether map` on the same process, reloads on SIGHUP
that keep unchanged tunnels' connections, a broken file on reload that changes nothing, and
startup errors that name the file, the line and the key."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import unittest

import harness
from harness import MiB


class UpTest(harness.TetherTest):

    def write(self, text, name="tunnels.toml"):
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def server_block(self, server, header="", url_key="server"):
        """The settings of `server` with paths relative to the file: its CA is copied next to
        the file, so a relative path only works if it is resolved against the file's folder."""
        ca = "ca-%d.pem" % server.port
        shutil.copy(server.ca, self.path(ca))
        return '%s%s = "%s"\nca = "%s"\ntoken_file = "%s"\n' % (
            header, url_key, server.url, ca, server.token_file)

    @staticmethod
    def tunnel(name, device, port, local=0, proto=None, table="tunnel"):
        text = '\n[[%s]]\n' % table
        if name:
            text += 'name = "%s"\n' % name
        text += 'local = %s\ndevice = "%s"\nport = %d\n' % (
            local if isinstance(local, int) else '"%s"' % local, device, port)
        if proto:
            text += 'proto = "%s"\n' % proto
        return text

    def up(self, path, count):
        """Starts `tether up -f path --json` and waits for `count` listening events; returns
        the process and {name: local port}."""
        sock = self.path("control.sock")
        proc = self.tether("up", "-f", path, "--json", "--control", sock, name="tether-up")
        ports = {}
        after = 0
        while len(ports) < count:
            _, i, line = proc.wait_for(
                lambda l: (harness.Proc._parse_json(l) or {}).get("event") == "listening",
                after=after, what="%d listening events" % count)
            after = i + 1
            ev = harness.Proc._parse_json(line)
            ports[ev["name"]] = harness.split_hostport(ev["local"])[1]
        proc.control = sock
        return proc, ports

    def map_ls(self, proc):
        import json
        r = self.run_tether("map", "ls", "--json", "--control", proc.control)
        self.assertEqual(r.returncode, 0, r.stderr)
        return {m["name"]: m for m in json.loads(r.stdout)}

    def curl(self, port, path=""):
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "30",
                            "http://127.0.0.1:%d/%s" % (port, path)],
                           capture_output=True, timeout=harness.scaled(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    # -- the file's tunnels ---------------------------------------------------------------

    def test_three_tunnels_to_two_devices_with_ssh_and_curl(self):
        box1, box2 = harness.device_addr(71), harness.device_addr(72)
        sshd = self.sshd(box1)
        page1, page2 = b"<p>box one</p>\n", os.urandom(2 * MiB)
        http1 = self.http_server(box1, {"index.html": page1})
        http2 = self.http_server(box2, {"blob.bin": page2})
        server = self.dev_server(devices={"box1": box1, "box2": box2})
        path = self.write(self.server_block(server) +
                          self.tunnel("box1-ssh", "box1", sshd.port) +
                          self.tunnel("box1-web", "box1", http1.port) +
                          self.tunnel(None, "box2", http2.port))
        proc, ports = self.up(path, 3)
        proc.json_event("connected", server="127.0.0.1:%d" % server.port)
        default_name = "box2:%d" % http2.port
        self.assertEqual(set(ports), {"box1-ssh", "box1-web", default_name})

        argv = sshd.ssh_argv("echo via-up; uname -s", host="127.0.0.1", port=ports["box1-ssh"])
        r = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=harness.scaled(90))
        self.assertEqual((r.returncode, r.stdout), (0, b"via-up\nLinux\n"), r.stderr)
        self.assertEqual(self.curl(ports["box1-web"]), page1)
        self.assertEqual(hashlib.sha256(self.curl(ports[default_name], "blob.bin")).hexdigest(),
                         hashlib.sha256(page2).hexdigest())

        # `tether map` sees the file's tunnels by name, with their traffic.
        maps = self.map_ls(proc)
        self.assertEqual(set(maps), set(ports))
        self.assertEqual((maps["box1-web"]["device"], maps["box1-web"]["port"]),
                         ("box1", http1.port))
        self.assertGreater(maps[default_name]["bytes_in"], 2 * MiB)
        self.assertEqual(proc.stop(), 0)

    def test_two_servers_in_one_process(self):
        echo1 = self.echo_server(harness.device_addr(73))
        echo2 = self.echo_server(harness.device_addr(74))
        s1 = self.dev_server(devices={"dev-a": echo1.host})
        s2 = self.dev_server(devices={"dev-b": echo2.host})
        path = self.write(self.server_block(s1, "[[server]]\n", "url") +
                          self.tunnel("a", "dev-a", echo1.port, table="server.tunnel") +
                          "\n" + self.server_block(s2, "[[server]]\n", "url") +
                          self.tunnel("b", "dev-b", echo2.port, table="server.tunnel") +
                          self.tunnel("b-udp", "dev-b", 53, proto="udp", table="server.tunnel"))
        proc, ports = self.up(path, 3)
        for s in (s1, s2):
            proc.json_event("connected", server="127.0.0.1:%d" % s.port)
        harness.echo_roundtrip(ports["a"], os.urandom(3 * MiB))
        harness.echo_roundtrip(ports["b"], os.urandom(3 * MiB))
        maps = self.map_ls(proc)
        self.assertEqual(maps["a"]["server"], "127.0.0.1:%d" % s1.port)
        self.assertEqual(maps["b"]["server"], "127.0.0.1:%d" % s2.port)
        self.assertEqual(maps["b-udp"]["proto"], "udp")
        # Each server's session is its own: one going away leaves the other's tunnels working.
        s1.proc.stop()
        proc.json_event("disconnected", server="127.0.0.1:%d" % s1.port)
        harness.echo_roundtrip(ports["b"], os.urandom(MiB))

    # -- reloading ------------------------------------------------------------------------

    def test_sighup_applies_changes_and_keeps_unchanged_connections(self):
        echo = self.echo_server(harness.device_addr(75))
        other = self.echo_server(harness.device_addr(76))
        server = self.dev_server(devices={"dev-e": echo.host, "dev-o": other.host})
        head = self.server_block(server)
        keep = self.tunnel("keep", "dev-e", echo.port)
        path = self.write(head + keep +
                          self.tunnel("drop", "dev-e", echo.port) +
                          self.tunnel("change", "dev-e", echo.port))
        proc, ports = self.up(path, 3)
        proc.json_event("connected")

        # A connection on "keep" that stays open across the reload.
        conn = socket.create_connection(("127.0.0.1", ports["keep"]), timeout=harness.scaled(20))
        self.addCleanup(conn.close)
        conn.sendall(b"before")
        self.assertEqual(harness.recv_exact(conn, 6), b"before")

        self.write(head + keep +
                   self.tunnel("change", "dev-o", other.port) +
                   self.tunnel("new", "dev-o", other.port))
        mark = proc.mark()
        proc.popen.send_signal(signal.SIGHUP)
        ev = proc.json_event("reloaded", after=mark)
        self.assertEqual(sorted(ev["removed"]), ["change", "drop"])
        self.assertEqual(sorted(ev["added"]), ["change", "new"])
        self.assertEqual(ev["failed"], [])
        new_ports = {e["name"]: harness.split_hostport(e["local"])[1]
                     for e in proc.json_events("listening", after=mark)}
        self.assertEqual(set(new_ports), {"change", "new"})

        conn.sendall(b"after the reload")
        self.assertEqual(harness.recv_exact(conn, 16), b"after the reload")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", ports["drop"]), timeout=5).close()
        harness.echo_roundtrip(new_ports["change"], os.urandom(MiB))
        harness.echo_roundtrip(new_ports["new"], os.urandom(MiB))
        self.assertEqual(set(self.map_ls(proc)), {"keep", "change", "new"})

        # A broken file changes nothing: the error names the line and key, all keep working.
        self.write(head + keep + "\n[[tunnel]]\nname = \"x\"\nlocal = 1\ndevice = \"d\"\nport = 0\n")
        mark = proc.mark()
        proc.popen.send_signal(signal.SIGHUP)
        ev = proc.json_event("reload_failed", after=mark)
        self.assertEqual(ev["error"], "%s:15: tunnel[1].port: 0 is below the minimum 1" % path)
        self.assertEqual(set(self.map_ls(proc)), {"keep", "change", "new"})
        conn.sendall(b"still here")
        self.assertEqual(harness.recv_exact(conn, 10), b"still here")
        conn.close()  # else SIGTERM waits for it to drain
        self.assertEqual(proc.stop(), 0)

    def test_reload_reports_a_tunnel_that_cannot_listen(self):
        echo = self.echo_server(harness.device_addr(77))
        server = self.dev_server(devices={"dev-e": echo.host})
        head = self.server_block(server)
        path = self.write(head + self.tunnel("one", "dev-e", echo.port))
        proc, ports = self.up(path, 1)
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        self.write(head + self.tunnel("one", "dev-e", echo.port) +
                   self.tunnel("two", "dev-e", echo.port, local="127.0.0.1:%d" % busy_port) +
                   self.tunnel("three", "dev-e", echo.port))
        mark = proc.mark()
        proc.popen.send_signal(signal.SIGHUP)
        ev = proc.json_event("reloaded", after=mark)
        self.assertEqual(ev["added"], ["three"])
        self.assertEqual(ev["failed"],
                         [{"name": "two", "error": "127.0.0.1:%d is in use" % busy_port}])
        harness.echo_roundtrip(ports["one"], b"one still works")
        # Once the port is free, the next reload adds what failed.
        busy.close()
        mark = proc.mark()
        proc.popen.send_signal(signal.SIGHUP)
        ev = proc.json_event("reloaded", after=mark)
        self.assertEqual((ev["added"], ev["removed"], ev["failed"]), (["two"], [], []))
        harness.echo_roundtrip(busy_port, b"two works now")

    # -- startup errors -------------------------------------------------------------------

    def run_up(self, path, env=None):
        return self.run_tether("up", "-f", path, "--control", self.path("c.sock"), env=env)

    def test_errors_in_the_file_name_file_line_and_key(self):
        path = self.write('server = "tls://127.0.0.1:1"\n[[tunnel]]\nlocal = 1\ndevice = "d"\n'
                          'port = 22\nprot = "udp"\n')
        r = self.run_up(path)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(), "error: %s:6: tunnel[0].prot: unknown key "
                                           "(did you mean 'proto'?)" % path)
        r = self.run_up(self.path("missing.toml"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.toml: cannot read the tunnels file: No such file or directory",
                      r.stderr)
        # A tls:// server needs a token from somewhere.
        path = self.write('server = "tls://127.0.0.1:1"\n[[tunnel]]\nlocal = 0\ndevice = "d"\n'
                          'port = 22\n')
        r = self.run_up(path)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(), "error: %s:1: server tls://127.0.0.1:1: no token: give "
                                           "token_file, or set TETHER_TOKEN" % path)
        # Below comments, the line is the server's, not the top of the file; a token file that
        # cannot be read is named at its own line.
        tunnel = '[[tunnel]]\nlocal = 0\ndevice = "d"\nport = 22\n'
        path = self.write('# tunnels\n\nserver = "tls://127.0.0.1:1"\n' + tunnel)
        r = self.run_up(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("error: %s:3: server tls://127.0.0.1:1: no token" % path, r.stderr)
        path = self.write('# tunnels\n\nserver = "tls://127.0.0.1:1"\n\ntoken_file = "nope"\n' +
                          tunnel)
        r = self.run_up(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("error: %s:5: server tls://127.0.0.1:1: token file '" % path, r.stderr)

    def test_a_port_in_use_at_startup_names_the_tunnel(self):
        echo = self.echo_server(harness.device_addr(78))
        server = self.dev_server(devices={"dev-e": echo.host})
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = self.write(self.server_block(server) + self.tunnel("fine", "dev-e", echo.port) +
                          self.tunnel("taken", "dev-e", echo.port, local=port))
        r = self.run_up(path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("error: %s:11: tunnel 'taken': 127.0.0.1:%d is in use" % (path, port),
                      r.stderr)

    def test_a_rejected_token_exits_3(self):
        server = self.dev_server(devices={"dev-e": harness.device_addr(79)})
        with open(self.path("wrong.token"), "w") as f:
            f.write(harness.new_token()[0] + "\n")
        block = self.server_block(server).replace(server.token_file, "wrong.token")
        r = self.run_up(self.write(block + self.tunnel("t", "dev-e", 22)))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("error: authentication failed: token rejected by 127.0.0.1:%d"
                      % server.port, r.stderr)
        self.assertIn("; the token came from file %s" % self.path("wrong.token"), r.stderr)

if __name__ == "__main__":
    unittest.main()
