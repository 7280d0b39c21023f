"""Agent devices: a device the server cannot dial runs `tether agent`, which keeps a session
to the server open; a client reaches the device's ports through it exactly as it reaches a
direct device (client -> server -> agent -> device port).

Checked here: ssh, scp and curl through an agent, with bytes compared end to end; an agent
device whose agent is offline fails at once with the reason; a port outside the agent's
--allow list is refused as forbidden; an agent token cannot be used as a client's, nor a
client's as an agent's. Run with TETHER_TEST_SERVER_WORKERS=2 to have the client's and the
agent's sessions on different workers."""

import hashlib
import os
import re
import socket
import subprocess
import time
import unittest

import harness
import wire
from harness import MiB

AGENT_ONLINE = re.compile(r"agent for (\S+) online from (\S+)")


def refused_connection(port):
    """Connects to a local port whose stream the tunnel refuses, and waits for its end (the
    client may reset the connection before connect() even returns)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            harness.recv_until_closed(s, timeout=harness.scaled(10))
    except ConnectionResetError:
        pass


def agent_device_toml(device_id):
    return "[[device]]\nid = %s\nagent = true\n\n" % harness.toml_str(device_id)


def agent_credential_toml(name, token_sha256, device_id):
    return "[[credential]]\nname = %s\ntoken_sha256 = %s\nagent_for = %s\n\n" % (
        harness.toml_str(name), harness.toml_str(token_sha256), harness.toml_str(device_id))


class AgentFixture(harness.TetherTest):
    """A config server with client credential 'laptop' (allowed everywhere) and one agent
    device, dev-77, whose agent token is self.agent_token."""

    DEVICE = "dev-77"

    def start_server(self, extra_config="", directory=None):
        self.client_token, client_sha = harness.new_token()
        self.agent_token, agent_sha = harness.new_token()
        text = extra_config
        text += harness.credential_toml("laptop", client_sha, ["*:*"])
        text += agent_credential_toml("dev-77-agent", agent_sha, self.DEVICE)
        text += agent_device_toml(self.DEVICE)
        self.server = self.config_server(text, token=self.client_token, directory=directory)
        self.agent_token_file = self.path("agent.token")
        with open(self.agent_token_file, "w") as f:
            f.write(self.agent_token + "\n")
        os.chmod(self.agent_token_file, 0o600)
        return self.server

    def start_agent(self, allow, target, token_file=None, extra_args=(), wait=True):
        """Starts `tether agent` and, with `wait`, waits until the server lists it online."""
        after = self.server.proc.mark("stderr")
        proc = self.tether("agent", self.server.url, "--ca", self.server.ca,
                           "--token-file", token_file or self.agent_token_file,
                           "--allow", allow, "--target", target, "--json", *extra_args,
                           name="tether-agent")
        if wait:
            proc.json_event("connected")
            self.server.proc.wait_for(AGENT_ONLINE.search, stream="stderr", after=after,
                                      what="the agent online on the server")
        return proc


class AgentEndToEndTest(AgentFixture):
    def setUp(self):
        super().setUp()
        self.host = harness.device_addr(77)
        self.sshd_ = self.sshd(self.host)
        self.payload = os.urandom(3 * MiB + 11)
        self.www = self.http_server(self.host, {"blob.bin": self.payload})
        self.start_server()
        self.agent = self.start_agent("%d,%d" % (self.sshd_.port, self.www.port), self.host)
        self.client = self.connect(self.server, [(self.DEVICE, self.sshd_.port),
                                                 (self.DEVICE, self.www.port)])

    def test_ssh_scp_and_curl_through_the_agent(self):
        ssh_port, http_port = self.client.ports
        out = subprocess.run(self.sshd_.ssh_argv("echo", "through-the-agent",
                                                 host="127.0.0.1", port=ssh_port),
                             capture_output=True, text=True, timeout=harness.scaled(60))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "through-the-agent")

        # scp (the sftp subsystem) both ways, compared by SHA-256.
        size = int(os.environ.get("TETHER_TEST_AGENT_SCP_MIB", "64")) * MiB
        src = self.path("up.bin")
        with open(src, "wb") as f:
            for chunk in harness.det_chunks(77, size):
                f.write(chunk)
        remote = self.path("remote.bin")
        back = self.path("back.bin")
        ssh = self.sshd_.ssh_argv(host="127.0.0.1", port=ssh_port)
        options = ssh[1:ssh.index("%s@127.0.0.1" % self.sshd_.user)]
        target = "%s@127.0.0.1" % self.sshd_.user
        for argv in (["scp", "-q", *options, src, "%s:%s" % (target, remote)],
                     ["scp", "-q", *options, "%s:%s" % (target, remote), back]):
            argv = [a if a != "-p" else "-P" for a in argv]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=harness.scaled(300))
            self.assertEqual(r.returncode, 0, r.stderr)
        digest = harness.det_sha256(77, size)
        for path in (remote, back):
            with open(path, "rb") as f:
                self.assertEqual(hashlib.file_digest(f, "sha256").hexdigest(), digest, path)

        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", str(harness.scaled(60)),
                            "http://127.0.0.1:%d/blob.bin" % http_port],
                           capture_output=True, timeout=harness.scaled(90))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(),
                         hashlib.sha256(self.payload).hexdigest())

    def test_port_outside_allow_is_forbidden(self):
        echo = self.echo_server(self.host)
        client = self.connect(self.server, [(self.DEVICE, echo.port)])
        refused_connection(client.port)
        ev = client.proc.json_event("stream_error")
        self.assertEqual(ev["reason"], "forbidden")
        self.assertIn("port %d/tcp is not allowed by the agent of dev-77" % echo.port,
                      ev["message"])


class AgentOfflineTest(AgentFixture):
    def test_offline_device_fails_at_once_with_the_reason(self):
        self.start_server()
        client = self.connect(self.server, [(self.DEVICE, 22)])
        started = time.monotonic()
        refused_connection(client.port)
        ev = client.proc.json_event("stream_error")
        self.assertLess(time.monotonic() - started, harness.scaled(3))
        self.assertEqual(ev["reason"], "unreachable")
        self.assertIn("device dev-77 is offline (its agent has not connected", ev["message"])

        # Once its agent has come and gone, the message says when it was last seen.
        agent = self.start_agent("22", "127.0.0.1")
        online = self.server.proc.json_event("agent", state="online", device="dev-77")
        agent.stop()
        self.server.proc.wait_for(r"agent for dev-77 offline", stream="stderr")
        offline = self.server.proc.json_event("agent", state="offline", device="dev-77")
        self.assertEqual(online["peer"], offline["peer"])
        after = client.proc.mark()
        refused_connection(client.port)
        ev = client.proc.json_event("stream_error", after=after)
        self.assertRegex(ev["message"], r"device dev-77 is offline \(agent last seen \d+ s ago\)")


class AgentAnswersBadlyTest(AgentFixture):
    """An agent (a peer built by hand here) that refuses an open with a code about its own
    session, or whose session ends while an open waits for it: that stream fails (the
    device offline, or the agent's error), and the client's session goes on serving its
    other mappings (it used to take the code as its own session lost, drop it, and never
    reconnect)."""

    def setUp(self):
        super().setUp()
        self.echo = self.echo_server(harness.device_addr(78))
        self.start_server(extra_config=harness.device_toml("dev-78", self.echo.host))
        self.client = self.connect(self.server, [(self.DEVICE, 22), ("dev-78", self.echo.port)])
        self.agent_port = self.client.ports[0]
        self.echo_port = self.client.ports[1]

    def fake_agent(self):
        after = self.server.proc.mark("stderr")
        agent = wire.Conn.to_server(self.server)
        self.addCleanup(agent.close)
        agent.handshake(self.agent_token, role=wire.ROLE_AGENT)
        self.server.proc.wait_for(AGENT_ONLINE.search, stream="stderr", after=after,
                                  what="the hand-made agent online")
        return agent

    def connect_and_answer(self, agent, answer):
        """A connection to the agent device's mapping: `answer(open_frame)` plays the agent's
        part; returns once the client has ended the connection."""
        with socket.create_connection(("127.0.0.1", self.agent_port), timeout=10) as s:
            f = agent.read_frame()
            self.assertEqual(f.type, wire.OPEN)
            answer(f)
            try:
                harness.recv_until_closed(s, timeout=harness.scaled(10))
            except ConnectionResetError:
                pass

    def assert_client_still_serves(self):
        harness.echo_roundtrip(self.echo_port, os.urandom(4096), timeout=10)

    def test_refusals_with_session_codes_fail_only_their_stream(self):
        agent = self.fake_agent()
        for code in (wire.SESSION_LOST, wire.GOING_AWAY):
            after = self.client.proc.mark()
            self.connect_and_answer(agent, lambda f, code=code: agent.send(
                wire.open_result(f.stream_id, code, message="my session is gone")))
            # A code no refusal of an open may carry: the agent's fault, in its words.
            ev = self.client.proc.json_event("stream_error", after=after)
            self.assertEqual(ev["reason"], "internal", ev)
            self.assertIn("my session is gone", ev["message"])
            self.assert_client_still_serves()

    def test_agent_gone_while_an_open_waits(self):
        agent = self.fake_agent()
        after = self.client.proc.mark()
        self.connect_and_answer(agent, lambda f: agent.close_abruptly())
        ev = self.client.proc.json_event("stream_error", after=after)
        self.assertEqual(ev["reason"], "unreachable", ev)
        self.assertIn("dev-77 is offline", ev["message"])
        self.assert_client_still_serves()
        # and a stop still ends it at once
        self.client.proc.popen.terminate()
        self.assertEqual(self.client.proc.wait(timeout=harness.scaled(15)), 0)


class AgentCredentialTest(AgentFixture):
    def setUp(self):
        super().setUp()
        self.start_server()

    def test_agent_token_cannot_be_used_by_a_client(self):
        r = self.run_tether("connect", self.server.url, "--ca", self.server.ca,
                            "--token-file", self.agent_token_file, "-L", "0:dev-77:22",
                            "--control", self.path("c.sock"), timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("agent credential of device dev-77", r.stderr)

    def test_client_token_cannot_be_used_by_an_agent(self):
        r = self.run_tether("agent", self.server.url, "--ca", self.server.ca,
                            "--token-file", self.server.token_file, "--allow", "22", timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("not an agent credential", r.stderr)

    def test_unknown_token_and_untrusted_server_end_the_agent(self):
        token, _ = harness.new_token()
        r = self.run_tether("agent", self.server.url, "--ca", self.server.ca, "--token", token,
                            "--allow", "22", timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)
        other_ca = harness.make_ca(self.path("other-ca"), name="another CA")
        r = self.run_tether("agent", self.server.url, "--ca", other_ca,
                            "--token-file", self.agent_token_file, "--allow", "22", timeout=30)
        self.assertEqual(r.returncode, 4, r.stderr)

    def test_an_agent_session_opens_no_streams_itself(self):
        # The token decides which device an agent serves; its session only takes the
        # streams the server opens. One that opens a stream (say, to another device) is
        # refused, and the session goes on.
        conn = wire.Conn.to_server(self.server)
        self.addCleanup(conn.close)
        conn.handshake(self.agent_token, role=wire.ROLE_AGENT)
        conn.send(wire.open_stream(1, "dev-78", 22))
        f, _ = conn.read_until(lambda f: f.type == wire.OPEN_RESULT, timeout=10)
        self.assertEqual((f.stream_id, f.code), (1, wire.FORBIDDEN), f)
        self.assertIn("carries streams the server opens", f.message)
        self.server.proc.wait_for(r"agent for dev-77 online", stream="stderr")


if __name__ == "__main__":
    unittest.main()
