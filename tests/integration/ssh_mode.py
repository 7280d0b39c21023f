"""Fixtures for the `tether connect ssh://` tests: a private OpenSSH sshd on 127.0.0.1 stands
for the tunnel host, and `tether connect` reaches targets through its direct-tcpip channels.

Builds on harness.py (processes, sshd, device services); this module only adds what the
ssh:// client needs: its command line, trusted or empty known_hosts files, and stopping or
restarting the tunnel sshd on its port.
"""

import os
import re
import signal
import subprocess

import harness


def _children_by_parent():
    """{ppid: [pid, ...]} for every process visible in /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid):
    """Pids of every process below `pid` (children, their children, ...)."""
    tree = _children_by_parent()
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def fingerprint(public_key_file):
    """The SHA256:... fingerprint of a public key file, as `ssh-keygen -lf` prints it."""
    r = subprocess.run(["ssh-keygen", "-lf", public_key_file], capture_output=True, text=True,
                       check=True, timeout=30)
    m = re.search(r"\bSHA256:[A-Za-z0-9+/]+", r.stdout)
    if not m:
        raise AssertionError("no SHA256 fingerprint in ssh-keygen output: %r" % r.stdout)
    return m.group(0)


class SshModeTest(harness.TetherTest):
    """Base class with an ssh:// client for the harness's Sshd."""

    def ssh_url(self, sshd, user=None):
        return "ssh://%s@%s" % (user or sshd.user, harness.hostport(sshd.host, sshd.port))

    def trusted_known_hosts(self, sshd):
        """A known_hosts file (in the test's temp dir) that lists the sshd's host key."""
        path = self.path("known_hosts-%d" % sshd.port)
        with open(path, "w") as f:
            f.write(sshd.known_hosts_line() + "\n")
        return path

    def ssh_args(self, sshd, mappings, key=None, known_hosts=None, extra_args=(), json=True):
        """`connect ssh://...` arguments; mappings as in TetherTest.connect ("[BIND:]LPORT:
        TARGET:TPORT", or (target, port) for "0:target:port"). key: the -i file (default the
        sshd's user key), or False for none."""
        specs = ["0:%s:%d" % m if isinstance(m, tuple) else m for m in mappings]
        args = ["connect", self.ssh_url(sshd)]
        if key is not False:  # False: no -i, the ssh-agent's keys
            args += ["-i", key or sshd.user_key]
        args += ["--known-hosts", known_hosts or self.trusted_known_hosts(sshd)]
        for s in specs:
            args += ["-L", s]
        if json:
            args.append("--json")
        return [*args, *extra_args]

    def ssh_connect(self, sshd, mappings, key=None, known_hosts=None, extra_args=(),
                    env=None):
        """Starts `tether connect ssh://...` with --json and returns a harness.Client once it
        printed `connected` and a `listening` event for every mapping (ports in mapping
        order)."""
        args = self.ssh_args(sshd, mappings, key, known_hosts, extra_args)
        specs = [a for prev, a in zip(args, args[1:]) if prev == "-L"]
        proc = self.tether(*args, name="tether-connect", env=env)
        proc.json_event("connected", timeout=30)
        harness.wait_until(lambda: len(proc.json_events("listening")) >= len(specs), 30,
                           "%d listening events" % len(specs))
        listening = proc.json_events("listening")
        ports = []
        for spec in specs:  # two mappings may name the same target: each takes one event
            target, port = harness._mapping_target(spec)
            ev = next((e for e in listening if (e["device"], int(e["port"])) == (target, port)),
                      None)
            if ev is None:
                raise AssertionError("no listening event for %s\n%s" % (spec, proc.output()))
            listening.remove(ev)
            ports.append(harness.split_hostport(ev["local"])[1])
        return harness.Client(proc, ports, specs)

    def run_ssh_connect(self, sshd, mappings, key=None, known_hosts=None, extra_args=(),
                        timeout=30.0, env=None):
        """Runs `tether connect ssh://...` that is expected to end by itself."""
        return self.run_tether(*self.ssh_args(sshd, mappings, key, known_hosts, extra_args),
                               timeout=timeout, env=env)

    def kill_sshd(self, sshd):
        """SIGKILL to the sshd and to every process it forked (the per-connection sshds,
        which a stock sshd leaves running when only the listener dies): the whole server
        is gone at once, as when its machine fails."""
        pids = descendants(sshd.proc.pid)
        os.kill(sshd.proc.pid, signal.SIGKILL)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sshd.proc.kill()

    def restart_sshd(self, sshd, host_key=None):
        """Starts the sshd again on its port, with its config, after it stopped; with
        `host_key`, that file becomes its only host key. Updates sshd.proc."""
        if sshd.proc.running():
            sshd.proc.stop()
        if host_key:
            with open(sshd.config) as f:
                text = f.read()
            text = re.sub(r"(?m)^HostKey .*$", "HostKey %s" % host_key, text)
            with open(sshd.config, "w") as f:
                f.write(text)
            sshd.host_key = host_key
            with open(host_key + ".pub") as f:
                sshd.host_public = f.read().strip()
        sshd.proc = self._register(harness.Proc(
            [harness.sshd_path(), "-D", "-e", "-f", sshd.config], name="sshd"))
        _, _, line = sshd.proc.wait_for(r"Server listening on|Cannot bind any address|"
                                        r"Bind to port", timeout=30, stream="stderr")
        if "Server listening on" not in line:
            raise AssertionError("sshd could not listen on its port %d again\n%s"
                                 % (sshd.port, sshd.proc.output()))

