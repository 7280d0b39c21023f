"""`tether server --dev` keeps its CA key, server key and token to itself: the state
directory is made 0700 whatever the umask, a directory or key/token file that others could
read is refused with the fix to apply, and a symlink where the server reads or writes a
file is refused without being followed. `tether connect --token` warns that the token shows
on the command line.
"""

import os
import stat
import unittest

import harness
from harness import KiB

SECRET_FILES = ("token", "ca.key", "server.key")


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


class DevStateTest(harness.TetherTest):
    def start_dev(self, state_dir, umask=None):
        """Starts `tether server --dev` on state_dir (under `umask` if given)."""
        argv = [harness.tether_bin(), "server", "--dev", "--listen", "127.0.0.1:0",
                "--state-dir", state_dir, "--json"]
        if umask is not None:
            argv = ["sh", "-c", 'umask %03o && exec "$0" "$@"' % umask] + argv
        return self.start(argv, name="tether-server")

    def make_state(self):
        """A state directory as a first run leaves it, tightened to 0700 and 0600 so that
        each test loosens exactly one thing."""
        d = self.path("state")
        p = self.start_dev(d)
        p.json_event("dev", timeout=15)
        self.assertEqual(p.stop(), 0, p.output())
        os.chmod(d, 0o700)
        for name in SECRET_FILES:
            os.chmod(os.path.join(d, name), 0o600)
        return d

    def expect_refused(self, state_dir, *words, what):
        """The server refuses to start on state_dir: exit code 2 and a message on stderr
        holding `words`."""
        p = self.start_dev(state_dir)
        try:
            code = p.wait(timeout=5)
        except AssertionError:
            code = None  # still running: stopped by the cleanup
        if code is None:
            self.fail("the server started with %s\n%s" % (what, p.output()))
        stderr = "\n".join(p.lines["stderr"])
        self.assertEqual(code, 2, "%s\n%s" % (what, p.output()))
        for w in words:
            self.assertIn(w, stderr, what)
        return stderr

    # -- a new directory -----------------------------------------------------------------------

    def test_new_state_dir_is_made_0700(self):
        """A state directory that does not exist yet is made with mode 0700."""
        d = self.path("new-state")
        self.start_dev(d).json_event("dev", timeout=15)
        self.assertEqual(oct(mode_of(d)), oct(0o700))

    def test_new_state_dir_is_made_0700_under_umask_000(self):
        """Under umask 000 too, the new state directory is 0700, and its key and token files
        are readable by their owner only."""
        d = self.path("new-state")
        self.start_dev(d, umask=0).json_event("dev", timeout=15)
        self.assertEqual(oct(mode_of(d)), oct(0o700))
        for name in SECRET_FILES:
            self.assertEqual(oct(mode_of(os.path.join(d, name)) & 0o077), oct(0), name)

    # -- loose modes ---------------------------------------------------------------------------

    def test_state_dir_open_to_others_is_refused(self):
        """An existing state directory with group or other permission bits and something in
        it: exit code 2, with its path, its mode and `chmod 700` in the message."""
        for mode in (0o755, 0o770):
            with self.subTest(mode=oct(mode)):
                d = self.path("state-%o" % mode)
                os.mkdir(d)
                with open(os.path.join(d, "notes"), "w") as f:
                    f.write("kept here before\n")
                os.chmod(d, mode)
                self.expect_refused(d, d, "%o" % mode, "chmod 700",
                                    what="a state directory of mode %o" % mode)

    def test_an_empty_state_dir_made_by_mkdir_is_made_private(self):
        """`mkdir state` (0755 under the usual umask) before the first run: nothing is in it
        to expose, so the server makes it 0700 and starts."""
        d = self.path("made-by-mkdir")
        os.mkdir(d)
        os.chmod(d, 0o755)
        self.start_dev(d).json_event("dev", timeout=15)
        self.assertEqual(oct(mode_of(d)), oct(0o700))

    def test_key_or_token_open_to_others_is_refused(self):
        """A key or token file that group or others may read: exit code 2, with the file's
        path, its mode and `chmod 600` in the message."""
        d = self.make_state()
        for name, mode in (("token", 0o644), ("ca.key", 0o640), ("server.key", 0o604)):
            with self.subTest(file=name, mode=oct(mode)):
                path = os.path.join(d, name)
                os.chmod(path, mode)
                try:
                    self.expect_refused(d, path, "%o" % mode, "chmod 600",
                                        what="%s of mode %o" % (name, mode))
                finally:
                    os.chmod(path, 0o600)

    # -- symlinks ------------------------------------------------------------------------------

    def test_symlinked_token_is_refused_and_not_followed(self):
        """DIR/token as a symlink, to a planted token or to nowhere: exit code 2 saying it
        is a symlink; the planted file is not changed, the missing one not created."""
        d = self.make_state()
        token = os.path.join(d, "token")
        os.unlink(token)
        planted = self.path("planted-token")
        with open(planted, "w") as f:
            f.write("tt_planted-by-someone-else\n")
        os.chmod(planted, 0o600)
        os.symlink(planted, token)
        stderr = self.expect_refused(d, token, "symlink", what="a symlinked token")
        self.assertNotIn("tt_planted", stderr)
        with open(planted) as f:
            self.assertEqual(f.read(), "tt_planted-by-someone-else\n")

        os.unlink(token)
        nowhere = self.path("nowhere-token")
        os.symlink(nowhere, token)
        self.expect_refused(d, token, "symlink", what="a token symlink to a missing file")
        self.assertFalse(os.path.lexists(nowhere), "the server wrote through the symlink")

    def test_symlinked_key_is_refused_and_not_followed(self):
        """DIR/ca.key as a symlink to a missing file: exit code 2 saying it is a symlink,
        and nothing is written through it."""
        d = self.make_state()
        key = os.path.join(d, "ca.key")
        os.unlink(key)
        nowhere = self.path("nowhere-key")
        os.symlink(nowhere, key)
        self.expect_refused(d, key, "symlink", what="a CA key symlink to a missing file")
        self.assertFalse(os.path.lexists(nowhere), "the server wrote through the symlink")

    # -- the client's --token ------------------------------------------------------------------

    def test_token_on_the_command_line_warns_and_works(self):
        """`tether connect --token VALUE` warns on stderr that the command line shows the
        token (pointing to --token-file or TETHER_TOKEN), without printing it, and
        connects."""
        echo = self.echo_server(harness.device_addr(88))
        server = self.dev_server(devices={"echo": echo.host})
        client = self.connect(server, [("echo", echo.port)], token=server.token)
        harness.echo_roundtrip(client.port, os.urandom(16 * KiB), timeout=10)
        stderr = client.proc.lines["stderr"]
        warnings = [l for l in stderr if "--token-file" in l or "TETHER_TOKEN" in l]
        self.assertTrue(warnings, "no warning about --token on stderr:\n%s" % "\n".join(stderr))
        self.assertNotIn(server.token, "\n".join(stderr + client.proc.lines["stdout"]))


if __name__ == "__main__":
    unittest.main()
