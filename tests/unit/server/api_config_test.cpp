#include <gtest/gtest.h>

#include "tether/server/config.hpp"

namespace tether::server {
namespace {

const std::string head = R"(cert = "s.crt"
key = "s.key"
)";
const std::string credential_section = R"(
[[credential]]
name = "laptop"
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
allow = ["*"]
)";
const std::string api_key_section = R"(
[[api_key]]
name = "backend"
token_sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
allow = ["dev-*:9876"]
)";

server_config parse(const std::string& text) {
  return parse_server_config(text, "/etc/tether/tether.toml");
}

std::string api_config_error(const std::string& text) {
  try {
    parse(text);
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

TEST(ApiConfig, OffByDefault) {
  const auto c = parse(head + credential_section);
  EXPECT_FALSE(c.api.listen);
  EXPECT_TRUE(c.api.keys.empty());
}

TEST(ApiConfig, ListenStateDirBoundsAndKeys) {
  const auto c = parse(head + "api_listen = \"127.0.0.1:8080\"\nstate_dir = \"state\"\n" +
                       "[api]\ntls = false\nmax_payload = 1024\nwebhook_burst = 5\n" +
                       credential_section + api_key_section);
  ASSERT_TRUE(c.api.listen);
  EXPECT_EQ(c.api.listen->port, 8080);
  EXPECT_FALSE(c.api.tls);
  EXPECT_EQ(c.api.state_dir, "/etc/tether/state");
  EXPECT_EQ(c.api.max_payload, 1024u);
  EXPECT_EQ(c.api.webhook_burst, 5u);
  ASSERT_EQ(c.api.keys.size(), 1u);
  EXPECT_EQ(c.api.keys[0].name, "backend");
  EXPECT_TRUE(c.api.keys[0].allow.allows("dev-1", 9876, mux::protocol::tcp));
  EXPECT_FALSE(c.api.keys[0].allow.allows("dev-1", 22, mux::protocol::tcp));
}

// Listing sessions is a key's own right, off unless given; a tunnel credential has no use
// for it and is refused with it.
TEST(ApiConfig, SeeSessionsOnlyForApiKeysAndOffByDefault) {
  const auto plain = parse(head + credential_section + api_key_section);
  EXPECT_FALSE(plain.api.keys[0].see_sessions);
  EXPECT_FALSE(plain.credentials[0].see_sessions);
  const auto ops = parse(head + credential_section + api_key_section + "see_sessions = true\n");
  EXPECT_TRUE(ops.api.keys[0].see_sessions);
  const auto error =
      api_config_error(head + credential_section + "see_sessions = true\n" + api_key_section);
  EXPECT_NE(error.find("credential[0].see_sessions"), std::string::npos) << error;
  EXPECT_NE(error.find("only an [[api_key]]"), std::string::npos) << error;
  EXPECT_NE(
      api_config_error(head + credential_section + api_key_section + "see_sessions = \"yes\"\n"),
      "");
}

TEST(ApiConfig, RefusesWhatWouldBeUnsafeOrUseless) {
  EXPECT_NE(api_config_error(
                head + "api_listen = \"0.0.0.0:8080\"\nstate_dir = \"s\"\n[api]\ntls = false\n" +
                credential_section)
                .find("loopback"),
            std::string::npos);
  EXPECT_NE(api_config_error(head + "api_listen = \"127.0.0.1:8080\"\n" + credential_section)
                .find("state_dir"),
            std::string::npos);
  EXPECT_NE(api_config_error(head + "api_listen = \"127.0.0.1:8080\"\nstate_dir = \"s\"\n[api]\n" +
                             "max_wait_ms = 5000\nrequest_timeout_ms = 5000\n" + credential_section)
                .find("request_timeout_ms"),
            std::string::npos);
  EXPECT_NE(api_config_error(head + "[api]\nmax_paylod = 5\n" + credential_section)
                .find("did you mean 'max_payload'"),
            std::string::npos);
  EXPECT_NE(api_config_error(head + credential_section + api_key_section + api_key_section)
                .find("duplicate API key name"),
            std::string::npos);
}

}  // namespace
}  // namespace tether::server
