#include "tether/client/reload_plan.hpp"

#include <gtest/gtest.h>

namespace tether::client {
namespace {

std::vector<server_spec> servers(std::string_view text) {
  return parse_tunnels_file(text, "/t/tunnels.toml").servers;
}

constexpr std::string_view before_reload = R"(
[[server]]
url = "tls://a"
token_file = "ta"
[[server.tunnel]]
name = "keep"
local = 2222
device = "d1"
port = 22
[[server.tunnel]]
name = "change"
local = 8080
device = "d1"
port = 80
[[server.tunnel]]
name = "drop"
local = 9090
device = "d1"
port = 90
[[server.tunnel]]
local = 0
device = "d1"
port = 53
proto = "udp"

[[server]]
url = "tls://b"
token_file = "tb"
[[server.tunnel]]
name = "b1"
local = 3333
device = "d2"
port = 22
)";

TEST(ReloadPlan, SameFileDoesNothing) {
  EXPECT_TRUE(plan_reload(servers(before_reload), servers(before_reload)).empty());
}

TEST(ReloadPlan, TunnelsOfAServerThatStays) {
  const auto after = servers(R"(
[[server]]
url = "tls://a"
token_file = "ta"
[[server.tunnel]]
name = "keep"
local = 2222
device = "d1"
port = 22
[[server.tunnel]]
name = "change"
local = 8080
device = "d1"
port = 8080
[[server.tunnel]]
local = 0
device = "d1"
port = 53
proto = "udp"
[[server.tunnel]]
name = "new"
local = 9091
device = "d1"
port = 91

[[server]]
url = "tls://b"
token_file = "tb"
[[server.tunnel]]
name = "b1"
local = 3333
device = "d2"
port = 22
)");
  const auto plan = plan_reload(servers(before_reload), after);
  EXPECT_TRUE(plan.stop.empty());
  EXPECT_TRUE(plan.start.empty());
  ASSERT_EQ(plan.keep.size(), 2u);
  EXPECT_EQ(plan.keep[0].running, 0u);
  EXPECT_EQ(plan.keep[0].remove, (std::vector<std::size_t>{1, 2}));  // change, drop
  ASSERT_EQ(plan.keep[0].add.size(), 2u);
  EXPECT_EQ(plan.keep[0].add[0].name, "change");
  EXPECT_EQ(plan.keep[0].add[1].name, "new");
  EXPECT_TRUE(plan.keep[1].remove.empty());
  EXPECT_TRUE(plan.keep[1].add.empty());
}

TEST(ReloadPlan, ChangedSettingsRestartTheServer) {
  std::string text(before_reload);
  text.replace(text.find("\"tb\""), 4, "\"tb2\"");
  const auto plan = plan_reload(servers(before_reload), servers(text));
  EXPECT_EQ(plan.stop, (std::vector<std::size_t>{1}));
  EXPECT_EQ(plan.start, (std::vector<std::size_t>{1}));
  ASSERT_EQ(plan.keep.size(), 1u);
  EXPECT_EQ(plan.keep[0].running, 0u);
  EXPECT_TRUE(plan.keep[0].remove.empty());
}

TEST(ReloadPlan, ServersMayMoveInTheFile) {
  const auto b = servers(before_reload);
  const std::vector<server_spec> swapped{b[1], b[0]};
  const auto plan = plan_reload(b, swapped);
  EXPECT_TRUE(plan.empty());
  ASSERT_EQ(plan.keep.size(), 2u);
  EXPECT_EQ(plan.keep[0].running, 1u);
  EXPECT_EQ(plan.keep[0].next, 0u);
}

}  // namespace
}  // namespace tether::client
