"""API messages to an agent device: `offline` while no agent is connected, then delivered
through the agent's session with the device's reply."""

import os
import unittest

from api_fixtures import ApiTest, reply_text
from harness import device_addr, new_token, toml_str, wait_until


class ApiAgentTest(ApiTest):
    def test_offline_then_through_the_agent(self):
        replier = self.reply_server(device_addr(81))
        agent_token, agent_sha = new_token()
        extra = ("[[credential]]\nname = \"dev-81-agent\"\ntoken_sha256 = %s\n"
                 "agent_for = \"dev-81\"\n\n[[device]]\nid = \"dev-81\"\nagent = true\n\n"
                 % toml_str(agent_sha))
        server, keys = self.api_server({}, {"ops": ["*"]}, extra_config=extra)
        api = keys["ops"]
        status, answer, _ = api.send("dev-81", replier.port, "anyone?")
        self.assertEqual((status, answer["status"]), (200, "offline"), answer)
        self.assertEqual(api.messages()["messages"][-1]["status"], "offline")

        token_file = self.path("agent.token")
        with open(token_file, "w") as f:
            f.write(agent_token + "\n")
        os.chmod(token_file, 0o600)
        agent = self.tether("agent", server.url, "--ca", server.ca, "--token-file", token_file,
                            "--allow", str(replier.port), "--target", device_addr(81), "--json",
                            name="tether-agent")
        agent.json_event("connected")
        answers = []

        def delivered():
            answers.append(api.send("dev-81", replier.port, "via agent")[1])
            return answers[-1]["status"] == "delivered"

        wait_until(delivered, 10, "a message delivered through the agent")
        self.assertEqual(reply_text(answers[-1]), b"reply:via agent")


if __name__ == "__main__":
    unittest.main()
