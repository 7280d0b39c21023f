"""`tether connect ssh://` trusts only known host keys, says which key it saw, records new
ones only when told to, never accepts a changed one, reports refused user keys, and passes
the server's refusal of a forward to the local connection and the json `stream_error`."""

import os
import re
import socket
import subprocess
import unittest

import harness
from harness import KiB
from ssh_mode import SshModeTest, fingerprint


def read(path):
    with open(path) as f:
        return f.read()


class SshHostKeyTest(SshModeTest):
    def setUp(self):
        super().setUp()
        self.tunnel = self.sshd("127.0.0.1")
        self.echo = self.echo_server(harness.device_addr(71))
        self.mapping = [(self.echo.host, self.echo.port)]
        self.name = "[127.0.0.1]:%d" % self.tunnel.port

    def test_unknown_key_refused_then_accepted_then_known(self):
        known_hosts = self.path("known_hosts")
        host_fp = fingerprint(self.tunnel.host_key + ".pub")

        # Not in known_hosts: refused, naming the key so the user can check it.
        r = self.run_ssh_connect(self.tunnel, self.mapping, known_hosts=known_hosts)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("host key for %s is not known (ED25519 key %s); pass "
                      "--accept-new-host-key to trust it" % (self.name, host_fp), r.stderr)
        self.assertNotIn('"connected"', r.stdout)
        self.assertFalse(os.path.exists(known_hosts), "nothing may be recorded without the flag")

        # --accept-new-host-key records it and connects.
        client = self.ssh_connect(self.tunnel, self.mapping, known_hosts=known_hosts,
                                  extra_args=["--accept-new-host-key"])
        harness.echo_roundtrip(client.port, os.urandom(64 * KiB))
        client.proc.wait_line(re.escape("permanently added %s (ED25519 key %s) to %s"
                                        % (self.name, host_fp, known_hosts)), stream="stderr")
        self.assertEqual(client.proc.stop(), 0)
        lines = read(known_hosts).splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(lines[0].split()[:3], self.tunnel.known_hosts_line().split()[:3])
        self.assertEqual(os.stat(known_hosts).st_mode & 0o777, 0o600)

        # Without the flag, the recorded key is now trusted; nothing more is written.
        client = self.ssh_connect(self.tunnel, self.mapping, known_hosts=known_hosts)
        harness.echo_roundtrip(client.port, os.urandom(64 * KiB))
        self.assertEqual(client.proc.stop(), 0)
        self.assertEqual(read(known_hosts).splitlines(), lines)

    def test_changed_key_refused_even_with_accept_new(self):
        known_hosts = self.trusted_known_hosts(self.tunnel)
        before = read(known_hosts)
        old_fp = fingerprint(self.tunnel.host_key + ".pub")
        client = self.ssh_connect(self.tunnel, self.mapping, known_hosts=known_hosts)
        self.assertEqual(client.proc.stop(), 0)

        # The same address and port now answers with another host key.
        new_key = self.path("other_host_ed25519")
        harness.ssh_keygen(new_key, "tether-test-other-host")
        self.restart_sshd(self.tunnel, host_key=new_key)
        new_fp = fingerprint(new_key + ".pub")
        self.assertNotEqual(new_fp, old_fp)

        for extra in ([], ["--accept-new-host-key"]):
            r = self.run_ssh_connect(self.tunnel, self.mapping, known_hosts=known_hosts,
                                     extra_args=extra)
            self.assertEqual(r.returncode, 4, (extra, r.stderr))
            self.assertIn("HOST KEY CHANGED for %s!" % self.name, r.stderr)
            self.assertIn("The server offered ED25519 key %s" % new_fp, r.stderr)
            self.assertIn("%s:1 holds a different ED25519 key (%s)" % (known_hosts, old_fp),
                          r.stderr)
            self.assertNotIn('"connected"', r.stdout)
            self.assertEqual(read(known_hosts), before, "the known_hosts file was changed")
        self.assertEqual(self.echo.connections, 0)


class SshUserKeyTest(SshModeTest):
    def test_wrong_user_key_ends_with_exit_3(self):
        tunnel = self.sshd("127.0.0.1")
        stranger = self.path("stranger_ed25519")
        harness.ssh_keygen(stranger, "tether-test-stranger")
        r = self.run_ssh_connect(tunnel, [(harness.device_addr(72), 22)], key=stranger)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("authentication failed for user %s: the server refused key %s "
                      "(ED25519 %s)" % (tunnel.user, stranger, fingerprint(stranger + ".pub")),
                      r.stderr)
        self.assertNotIn('"connected"', r.stdout)

    def test_ssh_agent_keys_when_no_identity_file(self):
        tunnel = self.sshd("127.0.0.1")
        echo = self.echo_server(harness.device_addr(72))

        # No -i and no agent: nothing to authenticate with.
        r = self.run_ssh_connect(tunnel, [(echo.host, echo.port)], key=False,
                                 env=self.env(SSH_AUTH_SOCK=""))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("authentication failed for user %s: no identity file given (-i) and no "
                      "ssh-agent running" % tunnel.user, r.stderr)

        sock = self.path("agent.sock")
        self.start(["ssh-agent", "-D", "-a", sock], name="ssh-agent")
        harness.wait_until(lambda: os.path.exists(sock), 15, "the ssh-agent's socket")
        env = self.env(SSH_AUTH_SOCK=sock)

        # An agent without keys says so.
        r = self.run_ssh_connect(tunnel, [(echo.host, echo.port)], key=False, env=env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("the ssh-agent holds no keys", r.stderr)

        subprocess.run(["ssh-add", "-q", tunnel.user_key], env=env, check=True,
                       capture_output=True, timeout=30)
        client = self.ssh_connect(tunnel, [(echo.host, echo.port)], key=False, env=env)
        harness.echo_roundtrip(client.port, os.urandom(256 * KiB))
        client.proc.wait_line(re.escape("authenticated with agent key tether-test-user "
                                        "(ED25519 %s)" % fingerprint(tunnel.user_key + ".pub")),
                              stream="stderr")

    def test_encrypted_key_with_passphrase(self):
        tunnel = self.sshd("127.0.0.1")
        echo = self.echo_server(harness.device_addr(72))
        key = self.path("locked_ed25519")
        passphrase = "correct horse battery staple"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "locked",
                        "-f", key], check=True, capture_output=True, timeout=30)
        with open(key + ".pub") as f, open(tunnel.authorized_keys, "a") as out:
            out.write(f.read())
        good, bad = self.path("good-passphrase"), self.path("bad-passphrase")
        with open(good, "w") as f:
            f.write(passphrase + "\n")
        with open(bad, "w") as f:
            f.write("not it\n")
        mapping = [(echo.host, echo.port)]
        no_env = self.env()
        no_env.pop("TETHER_SSH_PASSPHRASE", None)

        r = self.run_ssh_connect(tunnel, mapping, key=key, env=no_env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("key %s is encrypted and no passphrase was given" % key, r.stderr)

        r = self.run_ssh_connect(tunnel, mapping, key=key, env=no_env,
                                 extra_args=["--passphrase-file", bad])
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("cannot use key %s: wrong passphrase?" % key, r.stderr)

        for extra, env in ((["--passphrase-file", good], no_env),
                           ([], self.env(TETHER_SSH_PASSPHRASE=passphrase))):
            client = self.ssh_connect(tunnel, mapping, key=key, extra_args=extra, env=env)
            harness.echo_roundtrip(client.port, os.urandom(64 * KiB))
            self.assertEqual(client.proc.stop(), 0)


class SshForwardingDeniedTest(SshModeTest):
    def refused_stream(self, client, port, target, target_port):
        """Connects to `port`, expects it closed without data, and returns the
        stream_error event for the target."""
        mark = client.proc.mark()
        data = b""
        try:  # the client may reset the connection before connect() has even returned
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                data, _ = harness.recv_until_closed(s, timeout=30)
        except ConnectionResetError:
            pass
        self.assertEqual(data, b"")
        return client.proc.json_event("stream_error", after=mark, device=target,
                                      port=target_port)

    def test_allow_tcp_forwarding_no(self):
        echo = self.echo_server(harness.device_addr(73))
        tunnel = self.sshd("127.0.0.1", allow_tcp_forwarding=False)
        client = self.ssh_connect(tunnel, [(echo.host, echo.port)])
        ev = self.refused_stream(client, client.port, echo.host, echo.port)
        self.assertEqual(ev["reason"], "forwarding_denied", ev)
        self.assertIn("administratively prohibited", ev["message"])
        self.assertEqual(echo.connections, 0)
        # The session stays up: a second connection is refused the same way.
        ev = self.refused_stream(client, client.port, echo.host, echo.port)
        self.assertEqual(ev["reason"], "forwarding_denied", ev)
        self.assertEqual(len(client.proc.json_events("connected")), 1)
        self.assertTrue(client.proc.running())

    def test_permit_open_not_matching(self):
        allowed = self.echo_server(harness.device_addr(74))
        other = self.echo_server(harness.device_addr(75))
        tunnel = self.sshd("127.0.0.1",
                           extra_config="PermitOpen %s:%d" % (allowed.host, allowed.port))
        client = self.ssh_connect(tunnel, [(other.host, other.port),
                                           (allowed.host, allowed.port)])
        ev = self.refused_stream(client, client.ports[0], other.host, other.port)
        self.assertEqual(ev["reason"], "forwarding_denied", ev)
        self.assertIn("administratively prohibited", ev["message"])
        self.assertEqual(other.connections, 0)
        # The permitted target on the same session works.
        harness.echo_roundtrip(client.ports[1], os.urandom(256 * KiB))
        self.assertEqual(allowed.connections, 1)
        self.assertEqual(len(client.proc.json_events("stream_error")), 1)

    def test_authorized_keys_limits_the_key_to_some_targets(self):
        # The authorized_keys line README.md suggests for a tunnel-only key.
        allowed = self.echo_server(harness.device_addr(77))
        other = self.echo_server(harness.device_addr(77))
        tunnel = self.sshd("127.0.0.1")
        with open(tunnel.authorized_keys, "w") as f:
            f.write('restrict,port-forwarding,permitopen="%s:%d" %s\n'
                    % (allowed.host, allowed.port, tunnel.user_public))
        client = self.ssh_connect(tunnel, [(allowed.host, allowed.port),
                                           (other.host, other.port)])
        harness.echo_roundtrip(client.ports[0], os.urandom(256 * KiB))
        ev = self.refused_stream(client, client.ports[1], other.host, other.port)
        self.assertEqual(ev["reason"], "forwarding_denied", ev)
        self.assertEqual((allowed.connections, other.connections), (1, 0))

    def test_closed_target_port_is_refused(self):
        tunnel = self.sshd("127.0.0.1")
        closed = harness.free_port(harness.device_addr(76))
        client = self.ssh_connect(tunnel, [(harness.device_addr(76), closed)])
        ev = self.refused_stream(client, client.port, harness.device_addr(76), closed)
        self.assertEqual(ev["reason"], "refused", ev)
        self.assertIn("connect failed", ev["message"])


if __name__ == "__main__":
    unittest.main()
