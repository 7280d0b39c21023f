"""Every shell example of docs/API.md runs, in order, against a `tether server --dev` whose
device dev-42 has a TCP service that replies and a UDP echo (the examples' ports 9876 and
5683 are replaced by theirs)."""

import os
import re
import subprocess
import unittest

from api_fixtures import ApiTest
from harness import SOURCE_DIR, device_addr, scaled


def shell_blocks(path):
    with open(path) as f:
        return re.findall(r"```sh\n(.*?)```", f.read(), re.S)


class ApiDocsTest(ApiTest):
    def test_examples_run(self):
        replier = self.reply_server(device_addr(142))
        udp = self.udp_echo_server(device_addr(142))
        server = self.dev_server({"dev-42": device_addr(142), "dev-43": device_addr(143)})
        url = server.proc.json_event("api")["url"]
        with open(os.path.join(server.dir, "api_key")) as f:
            key = f.read().strip()
        blocks = shell_blocks(os.path.join(SOURCE_DIR, "docs", "API.md"))
        self.assertGreater(len(blocks), 8)
        # The block that sets the environment is for readers; the test sets it here.
        script = "\n".join(b for b in blocks if "export TETHER_API" not in b)
        script = script.replace("9876", str(replier.port)).replace("5683", str(udp.port))
        env = self.env(TETHER_API=url, TETHER_API_KEY=key)
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.tmp, env=env,
                             capture_output=True, text=True, timeout=scaled(120))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn('"reply:hello"', out.stdout)
        self.assertIn('"base64data":"gAEC"', out.stdout)  # the UDP echo, as bytes
        self.assertIn("reply:from a webhook", out.stdout)
        self.assertIn("reply:a form field", out.stdout)
        self.assertIn('tether_api_messages_total{status="delivered"}', out.stdout)


if __name__ == "__main__":
    unittest.main()
