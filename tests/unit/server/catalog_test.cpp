#include "tether/server/catalog.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tether::server {
namespace {

acl rules_of(std::initializer_list<std::string_view> patterns) {
  std::vector<acl_rule> rules;
  for (auto p : patterns) {
    auto r = parse_acl_rule(p);
    EXPECT_TRUE(r.ok()) << p;
    if (r.ok()) rules.push_back(r.value());
  }
  return acl(std::move(rules));
}

const registry known_devices(std::vector<device>{
    {"dev-2", "10.0.0.2"}, {"dev-1", "10.0.0.1"}, {"gw-1", "gateway.internal"}});

TEST(Catalog, ListsOnlyWhatTheAclCoversInIdOrderWithoutAddresses) {
  const auto doc = nlohmann::json::parse(
      catalog_json(known_devices, rules_of({"dev-*:22/tcp", "dev-1:8000-8099", "dev-*:22/tcp"})));
  const auto expected = nlohmann::json::parse(R"({"devices": [
      {"id": "dev-1", "kind": "direct", "ports": [
          {"min": 22, "max": 22, "proto": "tcp"}, {"min": 8000, "max": 8099, "proto": "any"}]},
      {"id": "dev-2", "kind": "direct", "ports": [{"min": 22, "max": 22, "proto": "tcp"}]}]})");
  EXPECT_EQ(doc, expected);
  const auto text = doc.dump();
  EXPECT_EQ(text.find("10.0.0"), std::string::npos);
  EXPECT_EQ(text.find("gw-1"), std::string::npos);
}

TEST(Catalog, AllowEverythingAndNothing) {
  const auto all = nlohmann::json::parse(catalog_json(known_devices, rules_of({"*"})));
  ASSERT_EQ(all["devices"].size(), 3u);
  EXPECT_EQ(all["devices"][2]["ports"],
            nlohmann::json::parse(R"([{"min": 1, "max": 65535, "proto": "any"}])"));
  EXPECT_EQ(catalog_json(known_devices, acl{}), R"({"devices":[]})");
}

TEST(Catalog, AgentDevicesSayWhetherTheirAgentIsOnline) {
  const registry both(std::vector<device>{{"dev-1", "10.0.0.1"}, {"dev-7", "", true},
                                          {"dev-8", "", true}});
  agent_directory agents;
  auto link = std::make_shared<agent_link>();
  link->device = "dev-7";
  agents.attach(link);
  const auto doc = nlohmann::json::parse(catalog_json(both, rules_of({"*:22"}), &agents));
  ASSERT_EQ(doc["devices"].size(), 3u);
  EXPECT_EQ(doc["devices"][0]["kind"], "direct");
  EXPECT_FALSE(doc["devices"][0].contains("online"));
  EXPECT_EQ(doc["devices"][1]["kind"], "agent");
  EXPECT_EQ(doc["devices"][1]["online"], true);
  EXPECT_EQ(doc["devices"][2]["online"], false);
}

}  // namespace
}  // namespace tether::server
