"""Real clients through the tunnel to real servers on a device address: OpenSSH `ssh` to a
private sshd (host key checked), and `curl` to an HTTP server."""

import hashlib
import os
import subprocess
import unittest

import harness
from harness import MiB


class SshHttpTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        addr = harness.device_addr(19)
        self.sshd = self.sshd(addr)
        self.blob = os.urandom(4 * MiB)
        self.page = b"<!doctype html><title>device</title><p>hello from the device</p>\n"
        self.http = self.http_server(addr, {"index.html": self.page, "blob.bin": self.blob})
        server = self.dev_server(devices={"box": addr})
        self.client = self.connect(server, [("box", self.sshd.port), ("box", self.http.port)])
        self.ssh_port, self.http_port = self.client.ports

    def ssh(self, *command, input=None):
        argv = self.sshd.ssh_argv(*command, host="127.0.0.1", port=self.ssh_port)
        r = subprocess.run(argv, input=input, capture_output=True, timeout=harness.scaled(90),
                           stdin=None if input is not None else subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, "ssh failed: %r" % r.stderr)
        return r.stdout

    def test_ssh_runs_a_command_on_the_device(self):
        self.assertEqual(self.ssh("echo tether-ssh-ok; uname -s"), b"tether-ssh-ok\nLinux\n")
        # sshd saw the connection come from the server's side of the tunnel.
        self.sshd.proc.wait_line(r"Accepted publickey for", stream="stderr")

    def test_ssh_carries_bytes_both_ways(self):
        data = os.urandom(8 * MiB)
        out = self.ssh("sha256sum; head -c 3000000 /dev/zero | sha256sum", input=data)
        lines = out.decode().split("\n")
        self.assertEqual(lines[0].split()[0], hashlib.sha256(data).hexdigest())
        self.assertEqual(lines[1].split()[0], hashlib.sha256(b"\0" * 3000000).hexdigest())

    def test_curl_gets_the_page_and_a_larger_file(self):
        base = "http://127.0.0.1:%d/" % self.http_port
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", base],
                           capture_output=True, timeout=harness.scaled(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, self.page)
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "60", base + "blob.bin"],
                           capture_output=True, timeout=harness.scaled(90))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(),
                         hashlib.sha256(self.blob).hexdigest())

    def test_ssh_and_curl_at_the_same_time(self):
        argv = self.sshd.ssh_argv("head -c 20000000 /dev/zero", host="127.0.0.1",
                                  port=self.ssh_port)
        ssh = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            for _ in range(5):
                r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "30",
                                    "http://127.0.0.1:%d/index.html" % self.http_port],
                                   capture_output=True, timeout=harness.scaled(60))
                self.assertEqual(r.stdout, self.page, r.stderr)
            out, err = ssh.communicate(timeout=harness.scaled(90))
        finally:
            if ssh.poll() is None:
                ssh.kill()
                ssh.wait()
        self.assertEqual(ssh.returncode, 0, err)
        self.assertEqual(len(out), 20000000)


if __name__ == "__main__":
    unittest.main()
