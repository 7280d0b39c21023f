"""The front door: `tether` alone, misspelt commands and the exit codes in --help."""

import re
import unittest

import harness

COMMANDS = ("server", "connect", "up", "token", "map")


class FrontDoorTest(harness.TetherTest):
    def assert_command_list(self, text, usage_line, names):
        self.assertIn(usage_line, text)
        for name in names:
            self.assertRegex(text, r"(?m)^  %s  +\S" % re.escape(name))  # name, then its line
        for hidden in ("completion", "man"):
            self.assertNotRegex(text, r"(?m)^  %s\b" % hidden)

    def test_tether_alone_prints_the_commands(self):
        r = self.run_tether(timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertNotIn("A subcommand is required", r.stderr)
        self.assertTrue(r.stderr.startswith("Usage: tether COMMAND [OPTIONS]\n"), r.stderr)
        self.assert_command_list(r.stderr, "Usage: tether COMMAND [OPTIONS]", COMMANDS)
        self.assertRegex(r.stderr, r"(?m)^  connect  +Map local ports to device ports")

    def test_a_misspelt_command_gets_the_nearest_one(self):
        cases = {
            "conect": "connect",   # a letter missing
            "sever": "server",
            "mpa": "map",          # two letters swapped
            "tokne": "token",
            "Connect": "connect",  # case
            "upp": "up",
        }
        for typed, meant in cases.items():
            with self.subTest(typed):
                r = self.run_tether(typed, "tls://127.0.0.1:9", "-L", "0:d:1", timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                first = r.stderr.splitlines()[0]
                self.assertEqual(first, "error: unknown command '%s': did you mean '%s'?"
                                 % (typed, meant))
                self.assert_command_list(r.stderr, "Usage: tether COMMAND [OPTIONS]", COMMANDS)

    def test_a_word_far_from_every_command_gets_no_guess(self):
        for typed in ("frobnicate", "x", "tunnel"):
            with self.subTest(typed):
                r = self.run_tether(typed, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stderr.splitlines()[0], "error: unknown command '%s'" % typed)
                self.assertNotIn("did you mean", r.stderr)

    def test_a_command_of_commands_lists_its_own(self):
        r = self.run_tether("map", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assert_command_list(r.stderr, "Usage: tether map COMMAND [OPTIONS]", ("ls", "add", "rm"))
        r = self.run_tether("map", "lss", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.splitlines()[0], "error: unknown command 'lss': did you mean 'ls'?")
        r = self.run_tether("token", "nwe", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.splitlines()[0], "error: unknown command 'nwe': did you mean 'new'?")

    def test_a_terminal_escape_in_the_typed_word_is_not_echoed(self):
        r = self.run_tether("\x1b[31mconect", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertNotIn("\x1b", r.stderr)
        self.assertIn("\\x1b[31mconect", r.stderr.splitlines()[0])

    def test_an_unknown_option_before_the_command_is_named(self):
        r = self.run_tether("--frob", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.splitlines()[0], "error: unknown option '--frob'")
        self.assertIn("Usage: tether COMMAND [OPTIONS]", r.stderr)

    def test_help_and_version_still_succeed(self):
        self.assertEqual(self.run_tether("--version").stdout, "tether 0.1.0\n")
        r = self.run_tether("connect", "--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--ca", r.stdout)

    def test_server_without_flags_says_what_to_give_in_one_sentence(self):
        r = self.run_tether("server", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        first = r.stderr.splitlines()[0]
        self.assertIn("--config FILE", first)
        self.assertIn("--dev", first)
        # "needs --config FILE or --dev is required" says it twice over (server_command.cpp)
        self.assertNotIn("is required", first)

    def test_help_documents_the_exit_codes(self):
        r = self.run_tether("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Exit codes:", r.stdout)
        meanings = {
            0: r"ok",
            1: r"runtime failure",
            2: r"usage error",
            3: r"the server rejected the credential",
            4: r"the server could not be trusted",
            130: r"stopped by a second Ctrl-C",
        }
        for code, meaning in meanings.items():
            self.assertRegex(r.stdout, r"(?m)^  %d +%s" % (code, meaning))
        for hidden in ("completion", "man"):
            self.assertNotRegex(r.stdout, r"(?m)^  %s\b" % hidden)


if __name__ == "__main__":
    unittest.main()
