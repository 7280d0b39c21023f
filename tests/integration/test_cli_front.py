"""The front door: `tether` alone, misspelt commands, the exit codes in --help, and the bash
completion and man page the binary writes from its own command definitions."""

import os
import re
import shutil
import subprocess
import unittest

import harness

COMMANDS = ("server", "connect", "up", "devices", "agent", "token", "apikey", "send", "webhook",
            "messages", "map")


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
        self.assertTrue(first.startswith("error: "), first)  # as every other error
        self.assertIn("--config FILE", first)
        self.assertIn("--dev", first)
        # "needs --config FILE or --dev is required" says it twice over (server_command.cpp)
        self.assertNotIn("is required", first)

    def test_a_command_line_mistake_reads_like_every_other_error(self):
        for args in (("send", "--port", "5"), ("connect", "tls://127.0.0.1:1", "--log-level",
                                               "loud", "-L", "0:dev:22")):
            r = self.run_tether(*args, timeout=10)
            self.assertEqual(r.returncode, 2, r.stderr)
            first = r.stderr.splitlines()[0]
            self.assertTrue(first.startswith("error: "), first)
            self.assertFalse(first.startswith("error: error:"), first)

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


class CompletionTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        r = self.run_tether("completion", "bash")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.script = self.path("tether.bash")
        with open(self.script, "w") as f:
            f.write(r.stdout)

    def complete(self, line):
        """What <TAB> offers at the end of `line`: split into COMP_WORDS as bash does (`=`
        and `:` are words of their own, by its COMP_WORDBREAKS), then the function runs."""
        words = re.sub(r"([=:])", r" \1 ", line).split()
        if line[-1:] in (" ", "=", ":"):
            words.append("")
        quoted = " ".join("'%s'" % w for w in words)
        program = ('source "$1"\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_tether\n'
                   'printf "%%s\\n" "${COMPREPLY[@]}"\n' % (quoted, len(words) - 1))
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", program, "bash", self.script],
                           capture_output=True, text=True, timeout=harness.scaled(10))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("syntax error", r.stderr)
        return sorted(w for w in r.stdout.splitlines() if w)

    def test_the_function_is_registered_for_tether(self):
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", 'source "$1"; complete -p tether',
                            "bash", self.script], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "complete -F _tether tether")

    def test_commands(self):
        self.assertEqual(self.complete("tether con"), ["connect"])
        self.assertEqual(self.complete("tether "), sorted(COMMANDS))
        self.assertEqual(self.complete("tether map "), ["add", "ls", "rm"])
        self.assertEqual(self.complete("tether token "), ["new"])
        self.assertEqual(self.complete("tether connect "), [])  # a URL: nothing to guess

    def test_options_of_the_command_typed(self):
        self.assertEqual(self.complete("tether connect --ca"), ["--ca"])
        self.assertEqual(self.complete("tether connect --co"), ["--connect-timeout", "--control"])
        self.assertEqual(self.complete("tether server --de"), ["--dev", "--dev-host", "--device"])
        self.assertEqual(self.complete("tether map add --ch"), ["--check"])
        self.assertEqual(self.complete("tether --ver"), ["--version"])
        # A value is skipped, whichever way it is written, and is never taken for a command.
        self.assertEqual(self.complete("tether connect -L 2222:dev-42:22 --pi"), ["--pin"])
        self.assertEqual(self.complete("tether connect --ca=ca.crt --pi"), ["--pin"])
        self.assertEqual(self.complete("tether up -f map --js"), ["--json"])

    def test_values_are_left_to_bash(self):
        # After an option that takes a value, the function offers no words of its own: bash
        # falls back to file names (compopt -o default) for files and anything else.
        for line in ("tether connect --ca ", "tether connect --ca=", "tether connect -L ",
                     "tether connect --connect-timeout ", "tether server --config "):
            with self.subTest(line):
                self.assertEqual(self.complete(line), [])

    def test_every_option_in_help_completes(self):
        """The completion comes from the same definitions as --help: it cannot miss one."""
        for command in ("connect", "server", "up", "map add"):
            with self.subTest(command):
                help_text = self.run_tether(*command.split(), "--help").stdout
                in_help = set()  # the names that start the lines of the Options: part
                for names in re.findall(r"(?m)^ +(-[\w-]+(?:, ?-[\w-]+)*)", help_text):
                    in_help.update(n.strip() for n in names.split(","))
                offered = set(self.complete("tether %s -" % command))
                self.assertTrue(in_help, help_text)
                self.assertLessEqual(in_help, offered)


class ManPageTest(harness.TetherTest):
    def render(self):
        r = self.run_tether("man")
        self.assertEqual(r.returncode, 0, r.stderr)
        page = self.path("tether.1")
        with open(page, "w") as f:
            f.write(r.stdout)
        env = dict(os.environ, MANWIDTH="100", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
        if shutil.which("man"):
            argv = ["man", "-l", page]
        elif shutil.which("groff"):
            argv = ["groff", "-man", "-Tutf8", page]
        else:
            self.skipTest("neither man nor groff is installed (scripts/setup installs man-db)")
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "")
        return page, re.sub(r".\x08", "", out.stdout)  # no overstrike bold, if any

    def test_the_page_renders_with_every_command_and_the_connect_options(self):
        _, text = self.render()
        self.assertIn("tether - secure tunnels to ports on remote devices", text)
        for command in ("tether server", "tether connect", "tether up", "tether token new",
                        "tether map add"):
            self.assertIn(command, text)
        for option in ("--ca", "--pin", "--token-file", "--connect-timeout", "-L", "--stdio",
                       "--control"):
            self.assertRegex(text, r"(?m)^ +%s\b" % re.escape(option))
        self.assertRegex(text, r"(?m)^ +-i, --identity\b")
        self.assertIn("EXIT STATUS", text)
        self.assertRegex(text, r"(?m)^ +130\s")
        self.assertNotIn("tether completion", text)  # hidden: for packagers

    def test_groff_finds_nothing_to_warn_about(self):
        if not shutil.which("groff"):
            self.skipTest("groff is not installed (scripts/setup installs it)")
        r = self.run_tether("man")
        out = subprocess.run(["groff", "-man", "-ww", "-z"], input=r.stdout, capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "")


if __name__ == "__main__":
    unittest.main()
