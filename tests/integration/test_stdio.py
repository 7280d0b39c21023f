"""`tether connect URL --stdio TARGET`: stdin and stdout relayed to one stream, as OpenSSH's
ProxyCommand. Real `ssh`, `scp`, `rsync -e ssh` and `git` reach a private sshd on a device
address through a real `tether server` (tls://) or through an SSH tunnel host (ssh://); bytes
are compared by SHA-256 at both ends. tether is also run directly with pipes to check its
exit codes, that stdout carries nothing but the stream, and its messages on stderr."""

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import unittest

import harness
from harness import MiB
from ssh_mode import SshModeTest


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def write_random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


class StdioBase(SshModeTest):
    """Helpers shared by the tls:// and ssh:// tests: ssh options that go through tether."""

    def ssh_options(self, sshd, proxy_command, host):
        """Options of ssh, scp and rsync's ssh for the device sshd reached as `host` (what
        %h becomes) with `proxy_command`; the host key is checked under that name."""
        return ["-F", "/dev/null", "-i", sshd.user_key, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=%s" % sshd.write_known_hosts(host, sshd.port),
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30",
                "-o", "LogLevel=ERROR", "-o", "ProxyCommand=%s" % proxy_command]

    def ssh(self, sshd, proxy_command, host, *command, input=None, timeout=90):
        argv = ["ssh", *self.ssh_options(sshd, proxy_command, host), "-p", str(sshd.port),
                "%s@%s" % (sshd.user, host), *command]
        return subprocess.run(argv, input=input, capture_output=True,
                              timeout=harness.scaled(timeout),
                              stdin=None if input is not None else subprocess.DEVNULL)

    def run_stdio(self, args, input=b"", timeout=30):
        """Runs `tether connect ARGS` with `input` on a pipe to its stdin; returns the
        CompletedProcess (bytes)."""
        argv = [harness.tether_bin(), "connect", *map(str, args)]
        try:
            return subprocess.run(argv, input=input, capture_output=True, env=self.env(),
                                  timeout=harness.scaled(timeout))
        except subprocess.TimeoutExpired as e:
            raise AssertionError("`%s` did not finish within %.1f s\nstderr: %s"
                                 % (" ".join(argv), harness.scaled(timeout), e.stderr))


class StdioTlsTest(StdioBase):
    """ProxyCommand through a `tether server --dev` whose device `pi` runs a private sshd."""

    def setUp(self):
        super().setUp()
        self.addr = harness.device_addr(81)
        self.device_sshd = self.sshd(self.addr)
        self.server = self.dev_server(devices={"pi": self.addr})

    def tls_args(self, target, token_file=None):
        return [self.server.url, "--ca", self.server.ca,
                "--token-file", token_file or self.server.token_file, "--stdio", target]

    def proxy_command(self, token_file=None):
        return " ".join(shlex.quote(a) for a in
                                  [harness.tether_bin(), "connect",
                                   *self.tls_args("%h:%p", token_file)])

    def ssh_pi(self, *command, input=None, token_file=None, timeout=90):
        return self.ssh(self.device_sshd, self.proxy_command(token_file), "pi", *command,
                        input=input, timeout=timeout)

    def test_ssh_runs_a_command_and_the_terminal_stays_clean(self):
        r = self.ssh_pi("echo tether-stdio-ok; uname -s")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"tether-stdio-ok\nLinux\n")
        # ssh's stderr is the terminal: tether's default for --stdio (warn) leaves it empty.
        self.assertEqual(r.stderr, b"")
        self.device_sshd.proc.wait_line(r"Accepted publickey for", stream="stderr")

    def test_ssh_carries_bytes_both_ways(self):
        data = os.urandom(8 * MiB)
        r = self.ssh_pi("sha256sum; head -c 5000000 /dev/zero | sha256sum", input=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().split("\n")
        self.assertEqual(lines[0].split()[0], hashlib.sha256(data).hexdigest())
        self.assertEqual(lines[1].split()[0], hashlib.sha256(b"\0" * 5000000).hexdigest())

    def test_scp_64_mib_up_and_down(self):
        local = self.path("up.bin")
        remote = self.path("remote.bin")
        back = self.path("down.bin")
        write_random_file(local, 64 * MiB)
        digest = sha256_file(local)
        scp = ["scp", "-q", *self.ssh_options(self.device_sshd, self.proxy_command(), "pi"),
               "-P", str(self.device_sshd.port)]
        dest = "%s@pi:%s" % (self.device_sshd.user, remote)

        r = subprocess.run([*scp, local, dest], capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=harness.scaled(300))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(remote), digest, "the upload arrived changed")

        r = subprocess.run([*scp, dest, back], capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=harness.scaled(300))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(back), digest, "the download arrived changed")
        self.assertEqual(r.stderr, b"")

    @unittest.skipUnless(shutil.which("rsync"), "rsync is not installed (scripts/setup)")
    def test_rsync_e_ssh_copies_a_tree(self):
        src = self.path("tree")
        for i, sub in enumerate(["", "a", "a/b", "c"]):
            os.makedirs(os.path.join(src, sub), exist_ok=True)
            for j in range(3):
                with open(os.path.join(src, sub, "f%d-%d.bin" % (i, j)), "wb") as f:
                    f.write(os.urandom(1000 * (i + 1) * (j + 1) + j))
        os.symlink("a/b", os.path.join(src, "link"))
        dst = self.path("copy")
        ssh = " ".join(shlex.quote(a) for a in
                       ["ssh", *self.ssh_options(self.device_sshd, self.proxy_command(), "pi"),
                        "-p", str(self.device_sshd.port)])
        r = subprocess.run(["rsync", "-a", "-e", ssh, src + "/",
                            "%s@pi:%s/" % (self.device_sshd.user, dst)],
                           capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=harness.scaled(120))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.tree(dst), self.tree(src))
        self.assertEqual(os.readlink(os.path.join(dst, "link")), "a/b")

    @staticmethod
    def tree(root):
        """{relative path: SHA-256 or 'link -> target'} of every file under root."""
        out = {}
        for d, _, files in os.walk(root):
            for name in files:
                p = os.path.join(d, name)
                rel = os.path.relpath(p, root)
                out[rel] = ("link -> " + os.readlink(p)) if os.path.islink(p) else sha256_file(p)
        return out

    @unittest.skipUnless(shutil.which("git"), "git is not installed (scripts/setup)")
    def test_git_push_and_clone_over_ssh(self):
        bare = self.path("repo.git")
        subprocess.run(["git", "init", "-q", "--bare", bare], check=True, timeout=30)
        work = self.path("work")
        env = self.env(GIT_SSH_COMMAND=" ".join(shlex.quote(a) for a in [
            "ssh", *self.ssh_options(self.device_sshd, self.proxy_command(), "pi")]),
            GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
            GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_NOSYSTEM="1", HOME=self.tmp)
        url = "ssh://%s@pi:%d%s" % (self.device_sshd.user, self.device_sshd.port, bare)

        def git(*args, cwd=None):
            r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                               stdin=subprocess.DEVNULL, timeout=harness.scaled(60))
            self.assertEqual(r.returncode, 0, "git %s: %s" % (" ".join(args), r.stderr))
            return r.stdout

        git("init", "-q", "-b", "main", work)
        blob = os.urandom(2 * MiB)
        with open(os.path.join(work, "blob.bin"), "wb") as f:
            f.write(blob)
        git("add", "blob.bin", cwd=work)
        git("commit", "-q", "-m", "a blob", cwd=work)
        git("push", "-q", url, "main", cwd=work)
        clone = self.path("clone")
        git("clone", "-q", "-b", "main", url, clone)
        with open(os.path.join(clone, "blob.bin"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                             hashlib.sha256(blob).hexdigest())

    def test_bad_token_fails_ssh_and_exits_3(self):
        bad = self.path("bad-token")
        with open(bad, "w") as f:
            f.write(harness.new_token()[0] + "\n")
        os.chmod(bad, 0o600)
        r = self.ssh_pi("true", token_file=bad, timeout=60)
        self.assertEqual(r.returncode, 255, r.stderr)
        self.assertIn(b"authentication failed: token rejected by", r.stderr)

        r = self.run_stdio(self.tls_args("pi:22", token_file=bad), input=b"SSH-2.0-x\r\n")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"error: authentication failed: token rejected by 127.0.0.1:%d"
                      % self.server.port, r.stderr)
        # Said as `connect -L` says it: where the rejected token came from.
        self.assertIn(b"; the token came from file %s\n" % bad.encode(), r.stderr)

    def test_wrong_ca_exits_4(self):
        other = self.path("other-ca")
        os.makedirs(other)
        ca = harness.make_ca(other, name="not the server's CA")
        args = self.tls_args("pi:22")
        args[args.index("--ca") + 1] = ca
        r = self.run_stdio(args)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"check --ca", r.stderr)

    def test_unknown_device_exits_1_with_the_reason(self):
        r = self.run_stdio(self.tls_args("nosuch:22"), input=b"hello")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"error: cannot open a stream to nosuch:22 through 127.0.0.1:%d: "
                      b"unknown device" % self.server.port, r.stderr)
        self.assertEqual(r.stderr.count(b"\n"), 1, r.stderr)  # one line, no log noise

    def test_refused_port_exits_1(self):
        closed = harness.free_port(self.addr)
        r = self.run_stdio(self.tls_args("pi:%d" % closed), input=b"hello")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"error: cannot open a stream to pi:%d" % closed, r.stderr)
        self.assertIn(b"refused", r.stderr)

    def test_stdin_eof_is_a_half_close_and_stdout_holds_only_the_answer(self):
        dev = self.half_close_server(self.addr)
        data = os.urandom(3 * MiB + 17)
        r = self.run_stdio(self.tls_args("pi:%d" % dev.port), input=data, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"%d %s\n" % (len(data),
                                                  hashlib.sha256(data).hexdigest().encode()))
        self.assertEqual(r.stderr, b"")

    def test_device_closes_first_and_stdin_still_flows(self):
        """The device sends its greeting and half-closes at once: stdout ends, and what stdin
        sends afterwards still reaches it."""
        dev = self._service(GreetThenReadServer, self.addr)
        p = subprocess.Popen([harness.tether_bin(), "connect", *self.tls_args("pi:%d" % dev.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env())
        self.addCleanup(self.reap, p)
        self.assertEqual(p.stdout.read(), GreetThenReadServer.GREETING)  # to EOF
        self.assertIsNone(p.poll(), "tether ended with stdin still open")
        late = os.urandom(200000)
        p.stdin.write(late)
        p.stdin.close()
        self.assertEqual(p.wait(harness.scaled(30)), 0, p.stderr.read())
        harness.wait_until(lambda: dev.stats and "digest" in dev.stats[0], 15,
                           "the device to read to EOF")
        self.assertEqual(dev.stats[0]["digest"],
                         "%d %s" % (len(late), hashlib.sha256(late).hexdigest()))

    def test_session_lost_exits_1_with_a_message(self):
        echo = self.echo_server(self.addr)
        p = subprocess.Popen([harness.tether_bin(), "connect", *self.tls_args("pi:%d" % echo.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env())
        self.addCleanup(self.reap, p)
        p.stdin.write(b"ping\n")
        p.stdin.flush()
        self.assertEqual(p.stdout.read(5), b"ping\n")
        self.server.proc.kill()
        # No reconnect: the command ends although stdin stays open.
        self.assertEqual(p.wait(harness.scaled(30)), 1)
        err = p.stderr.read()
        self.assertIn(b"error: the tunnel session to 127.0.0.1:%d ended" % self.server.port, err)
        self.assertIn(b"the stream to pi:%d was cut after 5 bytes sent and 5 received"
                      % echo.port, err)
        self.assertEqual(p.stdout.read(), b"")

    def test_sigterm_ends_the_stream_quietly(self):
        echo = self.echo_server(self.addr)
        p = subprocess.Popen([harness.tether_bin(), "connect", *self.tls_args("pi:%d" % echo.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env())
        self.addCleanup(self.reap, p)
        p.stdin.write(b"ping\n")
        p.stdin.flush()
        self.assertEqual(p.stdout.read(5), b"ping\n")
        p.terminate()
        self.assertEqual(p.wait(harness.scaled(15)), 0)
        self.assertEqual(p.stderr.read(), b"")
        harness.wait_until(lambda: echo.active == 0, 15, "the device connection to close")

    def test_usage_errors_exit_2(self):
        cases = [
            (["-L", "0:pi:22"], b"--stdio relays one stream on stdin and stdout: it cannot be "
                                b"combined with -L, -U or -D"),
            (["-U", "0:pi:53"], b"cannot be combined with -L, -U or -D"),
            (["--json"], b"--stdio keeps stdout for the stream's bytes: no --json"),
            (["--control", self.path("c.sock")],
             b"--stdio has no mappings for tether map: no --control"),
        ]
        for extra, message in cases:
            r = self.run_stdio([*self.tls_args("pi:22"), *extra])
            self.assertEqual(r.returncode, 2, (extra, r.stderr))
            self.assertIn(message, r.stderr)
            self.assertEqual(r.stdout, b"")
        r = self.run_stdio(self.tls_args("pi"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"--stdio 'pi': expected DEVICE:PORT (or [IPv6]:PORT)", r.stderr)

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                f.close()
            except OSError:
                pass


class GreetThenReadServer(harness.TcpService):
    """Sends a greeting and half-closes at once, then reads to EOF and records the count
    and SHA-256 of what it read in stats["digest"]."""

    name = "greet-then-read"
    GREETING = b"hello from a device that is done talking\n"

    def handle(self, conn, stats):
        conn.sendall(self.GREETING)
        conn.shutdown(socket.SHUT_WR)
        digest = harness.read_to_eof_digest(conn, stats)
        stats["digest"] = "%d %s" % (stats["received"], digest)


class StdioSshTest(StdioBase):
    """ProxyCommand through an SSH tunnel host (a private sshd on 127.0.0.1): direct-tcpip
    to the device sshd, named by address as ssh's %h gives it."""

    def setUp(self):
        super().setUp()
        self.tunnel = self.sshd("127.0.0.1")

    def ssh_url_args(self, target, known_hosts=None):
        return [self.ssh_url(self.tunnel), "-i", self.tunnel.user_key,
                "--known-hosts", known_hosts or self.trusted_known_hosts(self.tunnel),
                "--stdio", target]

    def proxy_command(self):
        return " ".join(shlex.quote(a) for a in
                                  [harness.tether_bin(), "connect",
                                   *self.ssh_url_args("%h:%p")])

    def test_ssh_to_a_device_address(self):
        device = self.sshd(harness.device_addr(82))
        r = self.ssh(device, self.proxy_command(), device.host, "echo via-ssh-tunnel")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"via-ssh-tunnel\n")
        self.assertEqual(r.stderr, b"")

    def test_ssh_to_an_ipv6_device(self):
        """`ssh user@::1` makes %h:%p "::1:PORT", an IPv6 address without brackets."""
        device = self.sshd("::1")
        data = os.urandom(2 * MiB)
        r = self.ssh(device, self.proxy_command(), "::1", "sha256sum", input=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split()[0].decode(), hashlib.sha256(data).hexdigest())

    def test_bracketed_ipv6_target_directly(self):
        dev = self.half_close_server("::1")
        data = os.urandom(100000)
        r = self.run_stdio(self.ssh_url_args("[::1]:%d" % dev.port), input=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"%d %s\n" % (len(data),
                                                  hashlib.sha256(data).hexdigest().encode()))

    def test_unknown_host_key_exits_4(self):
        empty = self.path("empty_known_hosts")
        open(empty, "w").close()
        r = self.run_stdio(self.ssh_url_args("127.0.1.82:22", known_hosts=empty))
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"is not known", r.stderr)

    def test_refused_target_exits_1(self):
        closed = harness.free_port(harness.device_addr(83))
        r = self.run_stdio(self.ssh_url_args("%s:%d" % (harness.device_addr(83), closed)),
                           input=b"hello")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"error: cannot open a stream to %s:%d through 127.0.0.1:%d"
                      % (harness.device_addr(83).encode(), closed, self.tunnel.port), r.stderr)


if __name__ == "__main__":
    unittest.main()
