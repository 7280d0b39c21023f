#include "tether/server/agent_directory.hpp"

#include <gtest/gtest.h>

namespace tether::server {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<const agent_link> link_for(const std::string& device, const std::string& peer) {
  auto l = std::make_shared<agent_link>();
  l->device = device;
  l->peer = peer;
  return l;
}

TEST(AgentDirectory, OnlineUntilDetached) {
  std::vector<std::string> events;
  agent_directory d([&](const agent_event& e) {
    const char* what[] = {"online", "offline"};
    events.push_back(std::string(what[static_cast<int>(e.what)]) + " " + e.device + " " + e.peer);
  });
  EXPECT_FALSE(d.find("dev-77").online);
  EXPECT_FALSE(d.find("dev-77").last_seen);
  const auto a = link_for("dev-77", "10.0.0.1:1000");
  EXPECT_FALSE(d.attach(a));
  EXPECT_EQ(d.find("dev-77").online, a);
  EXPECT_EQ(d.online().size(), 1u);
  d.detach(a);
  EXPECT_FALSE(d.find("dev-77").online);
  EXPECT_TRUE(d.find("dev-77").last_seen);
  EXPECT_EQ(events, (std::vector<std::string>{"online dev-77 10.0.0.1:1000",
                                              "offline dev-77 10.0.0.1:1000"}));
}

TEST(AgentDirectory, TheFirstAgentStaysUntilItLeaves) {
  agent_directory d;
  const auto a = link_for("dev-77", "10.0.0.1:1000");
  const auto b = link_for("dev-77", "10.0.0.2:2000");
  EXPECT_FALSE(d.attach(a));
  EXPECT_EQ(d.attach(b), a);  // refused: the one online is returned
  EXPECT_EQ(d.find("dev-77").online, a);
  d.detach(b);  // one that never got in changes nothing
  EXPECT_EQ(d.find("dev-77").online, a);
  d.detach(a);
  EXPECT_FALSE(d.attach(b));
  EXPECT_EQ(d.find("dev-77").online, b);
}

TEST(AgentDirectory, OfflineMessageSaysWhenItWasLastSeen) {
  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(offline_message("dev-77", std::nullopt, now),
            "device dev-77 is offline (its agent has not connected since the server started)");
  EXPECT_EQ(offline_message("dev-77", now - 42s, now),
            "device dev-77 is offline (agent last seen 42 s ago)");
  EXPECT_EQ(offline_message("dev-77", now - 185s, now),
            "device dev-77 is offline (agent last seen 3 min ago)");
  EXPECT_EQ(offline_message("dev-77", now - 7200s, now),
            "device dev-77 is offline (agent last seen 2 h ago)");
}

}  // namespace
}  // namespace tether::server
