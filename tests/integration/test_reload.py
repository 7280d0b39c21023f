"""`tether server` reloads its config on SIGHUP: devices and credentials change without
dropping the sessions that keep their credential, a session whose credential was removed is
closed with a reason, streams no longer allowed are refused from then on, and a config with
errors is refused while the old one keeps serving."""

import os
import signal
import unittest

import harness


class ReloadTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.echo1 = self.echo_server(harness.device_addr(61))
        self.echo2 = self.echo_server(harness.device_addr(62))
        self.stay_token, self.stay_sha = harness.new_token()
        self.gone_token, self.gone_sha = harness.new_token()
        self.server = self.config_server(
            self.config_text(allow_stay=["dev-1:*"], devices=["dev-1"], with_gone=True),
            token=self.stay_token, extra_args=("--log-level", "debug"))

    def config_text(self, allow_stay, devices, with_gone, extra=""):
        addresses = {"dev-1": self.echo1.host, "dev-2": self.echo2.host}
        text = extra
        text += harness.credential_toml("stay", self.stay_sha, allow_stay)
        if with_gone:
            text += harness.credential_toml("gone", self.gone_sha, ["*"])
        for d in devices:
            text += harness.device_toml(d, addresses[d])
        return text

    def rewrite(self, text, listen=None):
        with open(self.server.config) as f:
            head = f.read().split("\n\n", 1)[0]  # listen, cert and key
        if listen is not None:
            head = head.replace(head.splitlines()[0], "listen = %s" % harness.toml_str(listen))
        with open(self.server.config, "w") as f:
            f.write(head + "\n\n" + text)

    def hup(self, expect="reloaded"):
        mark = self.server.proc.mark()
        os.kill(self.server.proc.pid, signal.SIGHUP)
        return self.server.proc.json_event(expect, after=mark)

    def test_devices_and_acl_change_without_dropping_the_session(self):
        client = self.connect(self.server, [("dev-1", self.echo1.port), ("dev-2", self.echo2.port)],
                              token=self.stay_token)
        # A connection open across the reload keeps working, although its target is no
        # longer allowed afterwards: the ACL decides on new streams.
        held = harness.socket.create_connection(("127.0.0.1", client.ports[0]))
        held.settimeout(harness.scaled(10))
        held.sendall(b"before")
        self.assertEqual(harness.recv_exact(held, 6), b"before")

        self.rewrite(self.config_text(allow_stay=["dev-2:*"], devices=["dev-1", "dev-2"],
                                      with_gone=True))
        self.hup()
        held.sendall(b"after the reload")
        self.assertEqual(harness.recv_exact(held, 16), b"after the reload")
        held.close()
        # dev-2 exists now and is allowed; dev-1 is no longer allowed.
        harness.echo_roundtrip(client.ports[1], b"a device added by the reload")
        mark = client.proc.mark()
        with harness.socket.create_connection(("127.0.0.1", client.ports[0])) as s:
            s.settimeout(harness.scaled(10))
            try:
                self.assertEqual(s.recv(1), b"")
            except ConnectionResetError:
                pass
        ev = client.proc.json_event("stream_error", after=mark)
        self.assertEqual(ev["reason"], "forbidden", ev)
        # The session stayed up: no reconnect happened.
        self.assertEqual(client.proc.json_events("disconnected"), [], client.proc.output())

    def test_a_removed_credential_ends_its_session_with_a_reason(self):
        gone = self.connect(self.server, [("dev-1", self.echo1.port)], token=self.gone_token)
        stay = self.connect(self.server, [("dev-1", self.echo1.port)], token=self.stay_token)
        self.rewrite(self.config_text(allow_stay=["dev-1:*"], devices=["dev-1"], with_gone=False))
        self.hup()
        self.server.proc.wait_line(r"credential 'gone' was removed", stream="stderr")
        # Its client is told why, tries again, and is refused: the token is no longer valid.
        self.assertEqual(gone.proc.wait(timeout=harness.scaled(20)), 3, gone.proc.output())
        self.assertIn("no longer accepted", gone.proc.output())
        harness.echo_roundtrip(stay.port, b"the other session goes on")
        self.assertEqual(stay.proc.json_events("disconnected"), [], stay.proc.output())

    def test_a_broken_config_is_refused_and_the_old_one_keeps_serving(self):
        client = self.connect(self.server, [("dev-1", self.echo1.port)], token=self.stay_token)
        self.rewrite("this is = not [ toml\n")
        ev = self.hup(expect="reload_failed")
        self.assertIn("tether.toml", ev["message"])
        self.server.proc.wait_line(r"config reload failed, the running config stays",
                                   stream="stderr")
        harness.echo_roundtrip(client.port, b"still the old config")
        # A new session with the old credentials still works.
        other = self.connect(self.server, [("dev-1", self.echo1.port)], token=self.gone_token)
        harness.echo_roundtrip(other.port, b"new session, old config")

    def test_a_new_listen_address_needs_a_restart_and_says_so(self):
        self.rewrite(self.config_text(allow_stay=["dev-1:*"], devices=["dev-1"], with_gone=True),
                     listen="127.0.0.1:1")
        self.hup()
        self.server.proc.wait_line(r"listen changed from .* restarted", stream="stderr")
        client = self.connect(self.server, [("dev-1", self.echo1.port)], token=self.stay_token)
        harness.echo_roundtrip(client.port, b"same address as before")


if __name__ == "__main__":
    unittest.main()
