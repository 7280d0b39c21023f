"""The tunnel sshd is killed (SIGKILL, with the per-connection sshds it forked) in the middle
of a transfer and started again on the same port: `tether connect ssh://` keeps its local
ports, reports `disconnected`, reconnects, and new connections carry correct bytes,
including one accepted while the session was down. A host that comes back with another
host key ends the client instead."""

import threading
import unittest

import harness
from harness import MiB
from ssh_mode import SshModeTest

SEED = 11


class SshReconnectTest(SshModeTest):
    def test_client_reconnects_after_sshd_is_killed_mid_transfer(self):
        device = self.sink_source_server(harness.device_addr(81))
        tunnel = self.sshd("127.0.0.1")
        known_hosts = self.trusted_known_hosts(tunnel)
        client = self.ssh_connect(tunnel, [(device.host, device.port)], known_hosts=known_hosts)
        first = client.proc.json_events("connected")[0]

        s = harness.open_source(client.port, 1024 * MiB, seed=SEED)
        self.addCleanup(s.close)
        harness.read_expected(s, SEED, 4 * MiB)
        mark = client.proc.mark()
        self.assertEqual(self.kill_sshd(tunnel), -9)

        # The tunnelled connection ends instead of hanging, and the client says why.
        rest, _ = harness.recv_until_closed(s, timeout=30, limit=512 * MiB)
        self.assertLess(4 * MiB + len(rest), 1024 * MiB, "the transfer was not cut off")
        s.close()
        ev = client.proc.json_event("disconnected", after=mark, timeout=30)
        self.assertIn("retry_in_ms", ev)
        self.assertTrue(client.proc.running())

        # A connection accepted while the session is down waits for the next session.
        pending = {}

        def early_transfer():
            try:
                pending["result"] = harness.transfer(client.port, up=MiB, down=MiB, timeout=90)
            except AssertionError as e:
                pending["error"] = e

        early = threading.Thread(target=early_transfer, daemon=True)
        early.start()

        self.restart_sshd(tunnel)
        ev = client.proc.json_event("connected", after=mark, timeout=60)
        self.assertEqual(ev["server"], first["server"])

        r = harness.transfer(client.port, up=16 * MiB, down=16 * MiB, timeout=90)
        self.assertEqual((r.sent, r.received), (16 * MiB, 16 * MiB))

        early.join(harness.scaled(120))
        self.assertFalse(early.is_alive(), "the connection made while down never finished")
        if "error" in pending:
            raise pending["error"]
        self.assertEqual(pending["result"].received, MiB)
        self.assertEqual(len(client.proc.json_events("connected")), 2)
        # The restarted sshd saw the client authenticate again, with the same known host key.
        tunnel.proc.wait_line(r"Accepted publickey for", stream="stderr")

    def test_changed_host_key_on_reconnect_ends_the_client(self):
        # The host comes back with another key: that is no outage to ride out but a host
        # key that is no longer trusted, so the client stops (exit 4) instead of retrying.
        echo = self.echo_server(harness.device_addr(82))
        tunnel = self.sshd("127.0.0.1")
        known_hosts = self.trusted_known_hosts(tunnel)
        with open(known_hosts) as f:
            before = f.read()
        client = self.ssh_connect(tunnel, [(echo.host, echo.port)], known_hosts=known_hosts,
                                  extra_args=["--accept-new-host-key"])
        mark = client.proc.mark()
        self.kill_sshd(tunnel)
        client.proc.json_event("disconnected", after=mark, timeout=30)

        other_key = self.path("other_host_ed25519")
        harness.ssh_keygen(other_key, "tether-test-other-host")
        self.restart_sshd(tunnel, host_key=other_key)
        self.assertEqual(client.proc.wait(60), 4)
        client.proc.wait_line(r"^error: HOST KEY CHANGED for \[127\.0\.0\.1\]:%d!" % tunnel.port,
                              stream="stderr")
        self.assertEqual(len(client.proc.json_events("connected")), 1)
        with open(known_hosts) as f:
            self.assertEqual(f.read(), before)


if __name__ == "__main__":
    unittest.main()
