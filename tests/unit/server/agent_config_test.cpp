// Agent devices and agent credentials in the server's config (docs/CONFIG.md).

#include <gtest/gtest.h>

#include "tether/server/config.hpp"
#include "tether/server/token.hpp"

namespace tether::server {
namespace {

const std::string laptop_hex = to_hex(sha256("tt_laptop"));
const std::string agent_hex = to_hex(sha256("tt_agent"));

// A client credential, then `rest`.
std::string with(const std::string& rest) {
  return "cert = \"server.crt\"\nkey = \"server.key\"\n\n"
         "[[credential]]\nname = \"laptop\"\ntoken_sha256 = \"" +
         laptop_hex + "\"\nallow = [\"*:*\"]\n\n" + rest;
}

std::string agent_credential(const std::string& extra = "agent_for = \"dev-77\"\n") {
  return "[[credential]]\nname = \"dev-77-agent\"\ntoken_sha256 = \"" + agent_hex + "\"\n" + extra +
         "\n";
}

std::string agent_config_error(const std::string& toml) {
  try {
    parse_server_config(toml, "server.toml");
  } catch (const config_error& e) {
    return e.what();
  }
  return "parsed";
}

TEST(AgentConfig, AgentDeviceAndItsCredential) {
  const auto cfg = parse_server_config(
      with(agent_credential() + "[[device]]\nid = \"dev-77\"\nagent = true\n\n"
                                "[[device]]\nid = \"dev-42\"\naddress = \"127.0.1.42\"\n"),
      "server.toml");
  ASSERT_EQ(cfg.devices.size(), 2u);
  EXPECT_TRUE(cfg.devices[0].agent);
  EXPECT_TRUE(cfg.devices[0].address.empty());
  EXPECT_FALSE(cfg.devices[1].agent);
  ASSERT_EQ(cfg.credentials.size(), 2u);
  EXPECT_EQ(cfg.credentials[0].agent_for, "");
  EXPECT_EQ(cfg.credentials[1].agent_for, "dev-77");
  EXPECT_FALSE(cfg.credentials[1].allow.allows("dev-77", 22, mux::protocol::tcp));
}

TEST(AgentConfig, MistakesAreNamed) {
  EXPECT_EQ(
      agent_config_error(with("[[device]]\nid = \"dev-77\"\nagent = true\naddress = \"h\"\n")),
      "server.toml:12: device[0].address: an agent device (agent = true) is reached "
      "through its agent: give no address");
  EXPECT_EQ(agent_config_error(with("[[device]]\nid = \"dev-77\"\nagent = \"yes\"\n")),
            "server.toml:11: device[0].agent: expected true or false, got a string");
  EXPECT_EQ(agent_config_error(with(agent_credential())),
            "server.toml:12: credential[1].agent_for: no [[device]] with id 'dev-77'");
  EXPECT_EQ(agent_config_error(
                with(agent_credential() + "[[device]]\nid = \"dev-77\"\naddress = \"h\"\n")),
            "server.toml:12: credential[1].agent_for: device 'dev-77' is dialed at its address; "
            "add agent = true to it (and remove the address) to reach it through an agent");
  EXPECT_EQ(
      agent_config_error(with(agent_credential("agent_for = \"dev-77\"\nallow = [\"*:*\"]\n") +
                              "[[device]]\nid = \"dev-77\"\nagent = true\n")),
      "server.toml:13: credential[1].allow: an agent credential (agent_for) opens no "
      "streams: give it no allow list");
  EXPECT_EQ(agent_config_error(with(agent_credential("agent_for = \"dev 77\"\n"))),
            "server.toml:12: credential[1].agent_for: 'dev 77' is not a valid device id (1-64 of "
            "A-Z a-z 0-9 . _ -)");
}

}  // namespace
}  // namespace tether::server
