"""The dashboard in a real browser: Debian's chromium driven by playwright-core
(tests/browser/dashboard.mjs) against a server with direct devices, agent devices, a live
tunnel and a device service that replies. See that file for what is checked.

Needs /usr/bin/chromium and `npm ci` in tests/browser (scripts/setup does both). Without
them this test exits 77, which ctest reports as skipped, never as passed."""

import json
import os
import re
import shutil
import subprocess
import sys
import unittest

from api_fixtures import ApiTest
from harness import SOURCE_DIR, device_addr, new_token, scaled, tether_bin, toml_str

BROWSER_DIR = os.path.join(SOURCE_DIR, "tests", "browser")
CHROMIUM = "/usr/bin/chromium"
SKIP = 77  # ctest's SKIP_RETURN_CODE for the integration tests


def missing_prerequisites():
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (apt-get install chromium)")
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs npm)")
    package = os.path.join(BROWSER_DIR, "node_modules", "playwright-core", "package.json")
    if not os.path.exists(package):
        missing.append("playwright-core (npm ci in tests/browser)")
    elif shutil.which("node"):
        wanted = node_major_wanted(package)
        found = node_major()
        if wanted and (found is None or found < wanted):
            missing.append("node %d or newer for playwright-core (found %s)"
                           % (wanted, "none" if found is None else "node %d" % found))
    return missing


def node_major_wanted(package):
    """The least Node major version a package's "engines" asks for (">=20" -> 20)."""
    with open(package, encoding="utf-8") as f:
        wanted = json.load(f).get("engines", {}).get("node", "")
    m = re.match(r"\s*>=\s*(\d+)", wanted)
    return int(m.group(1)) if m else None


def node_major():
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"v(\d+)\.", out.strip())
    return int(m.group(1)) if m else None


# Checked at import: `python3 -m unittest` would report a skipped test as passed (exit 0).
_missing = missing_prerequisites()
if _missing:
    sys.stderr.write("\n" + "!" * 78 + "\n"
                     "test_dashboard SKIPPED: the browser test cannot run here, missing: %s\n"
                     "scripts/setup installs them. The dashboard is NOT tested by this run.\n"
                     % ", ".join(_missing) + "!" * 78 + "\n")
    sys.stderr.flush()
    sys.exit(SKIP)


class DashboardTest(ApiTest):
    def test_dashboard_in_chromium(self):
        ok_addr, closed_addr, agent_addr = device_addr(91), device_addr(92), device_addr(93)
        silent_port = self.port_that_never_answers(device_addr(95))
        replier = self.reply_server(ok_addr)
        file_size = 256 * 1024
        web = self.http_server(ok_addr, {"file.bin": os.urandom(file_size)})
        agent_service = self.reply_server(agent_addr)

        agent_token, agent_sha = new_token()
        extra = ("[[credential]]\nname = \"dev-93-agent\"\ntoken_sha256 = %s\n"
                 "agent_for = \"dev-93\"\n\n"
                 "[[device]]\nid = \"dev-93\"\nagent = true\n\n"
                 "[[device]]\nid = \"dev-94\"\nagent = true\n\n" % toml_str(agent_sha))
        server, keys = self.api_server(
            {"dev-91": ok_addr, "dev-92": closed_addr, "dev-95": device_addr(95)},
            {"ops": ["*"], "viewer": ["dev-91:*"]}, extra_config=extra, see_sessions=("ops",),
            settings="connect_timeout_ms = 300")
        api = keys["ops"]
        max_payload = 64 * 1024  # the API's default

        # The agent of dev-93; dev-94's never connects.
        token_file = self.path("agent.token")
        with open(token_file, "w") as f:
            f.write(agent_token + "\n")
        os.chmod(token_file, 0o600)
        agent = self.tether("agent", server.url, "--ca", server.ca, "--token-file", token_file,
                            "--allow", str(agent_service.port), "--target", agent_addr, "--json",
                            name="tether-agent")
        agent.json_event("connected")

        # The server learns whether its direct devices answer by dialing them.
        status, answer, _ = api.send("dev-91", replier.port, "warm up")
        self.assertEqual((status, answer["status"]), (200, "delivered"), answer)
        status, answer, _ = api.send("dev-92", 9, "anyone?")
        self.assertEqual((status, answer["status"]), (200, "refused"), answer)
        status, answer, _ = api.send("dev-95", silent_port, "anyone?")
        self.assertEqual((status, answer["status"]), (200, "timed_out"), answer)

        tunnel = self.connect(server, [("dev-91", web.port)])
        config = {
            "url": api.url,
            "keys": {"ops": api.key, "viewer": keys["viewer"].key},
            "devices": {"direct_ok": "dev-91", "direct_closed": "dev-92",
                        "direct_dead": "dev-95", "agent_on": "dev-93",
                        "agent_off": "dev-94"},
            "reply_port": replier.port,
            "tunnel_credential": "laptop",
            "tunnel_url": "http://127.0.0.1:%d/file.bin" % tunnel.port,
            "tunnel_file_size": file_size,
            "max_payload": max_payload,
            "screenshots": os.environ.get("TETHER_SCREENSHOTS") or os.path.join(
                os.path.dirname(os.path.abspath(tether_bin())), "dashboard-screenshots"),
            "timeout_ms": int(scaled(15) * 1000),
        }
        env = dict(os.environ, DASHBOARD_TEST=json.dumps(config))
        try:
            run = subprocess.run(["node", os.path.join(BROWSER_DIR, "dashboard.mjs")],
                                 cwd=BROWSER_DIR, env=env, capture_output=True, text=True,
                                 timeout=scaled(120))
        except subprocess.TimeoutExpired as e:
            self.fail("the browser driver did not finish:\n%s\n%s" % (e.stdout, e.stderr))
        sys.stdout.write(run.stdout)
        sys.stderr.write(run.stderr)
        self.assertEqual(run.returncode, 0, "the browser driver failed:\n%s\n%s"
                         % (run.stdout, run.stderr))
        self.assertIn("dashboard: all checks passed", run.stdout)
        print("screenshots in %s" % config["screenshots"])


if __name__ == "__main__":
    unittest.main()
