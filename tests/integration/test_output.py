"""What the CLI prints is easy to read and to parse: log lines carry UTC timestamps ending in
Z, every JSON event has a "time", and NO_COLOR turns colours off even on a terminal."""

import subprocess
import unittest

import harness

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class OutputTest(harness.TetherTest):
    def test_events_and_logs_carry_utc_timestamps(self):
        server = self.dev_server()
        ev = server.proc.json_event("listening", proto="tls")
        self.assertRegex(ev["time"], "^" + STAMP + "$")
        self.assertEqual(list(ev)[:2], ["event", "time"])
        line = server.proc.wait_line(r"open files limit", stream="stderr")
        self.assertRegex(line, "^" + STAMP + " ")

    def on_a_terminal(self, env):
        """The first lines `tether server --dev` writes to a pseudo-terminal."""
        argv = [harness.tether_bin(), "server", "--dev", "--listen", "127.0.0.1:0",
                "--state-dir", self.path("state")]
        r = subprocess.run(["script", "-qec", "timeout -s INT 2 " + " ".join(argv), "/dev/null"],
                           capture_output=True, env=env, timeout=harness.scaled(20))
        return r.stdout

    def test_no_color_is_honoured_on_a_terminal(self):
        env = self.env()
        env.pop("NO_COLOR", None)
        coloured = self.on_a_terminal(env)
        self.assertIn(b"\x1b[", coloured)
        plain = self.on_a_terminal(self.env(NO_COLOR="1"))
        self.assertIn(b"open files limit", plain)
        self.assertNotIn(b"\x1b[", plain)


if __name__ == "__main__":
    unittest.main()
