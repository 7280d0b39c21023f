#include "tether/server/router.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

namespace tether::server {
namespace {

using mux::protocol;
using namespace std::chrono_literals;

credential allowed(std::initializer_list<std::string_view> patterns) {
  std::vector<acl_rule> rules;
  for (auto p : patterns) {
    auto r = parse_acl_rule(p);
    EXPECT_TRUE(r.ok()) << p;
    if (r.ok()) rules.push_back(r.value());
  }
  return credential{"laptop", {}, acl(std::move(rules))};
}

class Router : public ::testing::Test {
 protected:
  asio::io_context io;
  relay::buffer_pool pool;
  std::shared_ptr<const registry> devices = std::make_shared<const registry>(
      std::vector<device>{{"dev-1", "127.0.0.1"}, {"dev-6", "::1"}});
  router routes{io.get_executor(), devices, pool, {500ms, 60000ms}};

  // Runs connect() of the upstream to completion.
  std::optional<refusal> connect(upstream& up) {
    std::optional<refusal> out;
    bool done = false;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      out = co_await up.connect();
      done = true;
    }, asio::detached);
    io.restart();
    io.run_for(5s);
    EXPECT_TRUE(done);
    return out;
  }
};

TEST_F(Router, TheAclDecidesPerProtocol) {
  const auto cred = allowed({"dev-1:53/udp", "dev-1:22/tcp"});
  EXPECT_TRUE(routes.route({"dev-1", 53, protocol::udp}, cred).ok());
  EXPECT_TRUE(routes.route({"dev-1", 22, protocol::tcp}, cred).ok());

  const auto tcp53 = routes.route({"dev-1", 53, protocol::tcp}, cred);
  ASSERT_FALSE(tcp53.ok());
  EXPECT_EQ(tcp53.code(), errc::forbidden);
  EXPECT_EQ(tcp53.message(), "credential 'laptop' may not reach dev-1:53/tcp");

  const auto udp22 = routes.route({"dev-1", 22, protocol::udp}, cred);
  ASSERT_FALSE(udp22.ok());
  EXPECT_EQ(udp22.code(), errc::forbidden);
  EXPECT_EQ(udp22.message(), "credential 'laptop' may not reach dev-1:22/udp");
}

TEST_F(Router, AnUnknownDeviceIsRefusedByName) {
  const auto r = routes.route({"dev-9", 22, protocol::tcp}, allowed({"*"}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), errc::unknown_device);
  EXPECT_EQ(r.message(), "no device 'dev-9' in the server's registry");
}

TEST_F(Router, ATcpUpstreamDialsTheDevicePort) {
  asio::ip::tcp::acceptor listening(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = listening.local_endpoint().port();
  auto up = routes.route({"dev-1", port, protocol::tcp}, allowed({"*"}));
  ASSERT_TRUE(up.ok());
  EXPECT_FALSE(connect(**up).has_value());
}

TEST_F(Router, ATcpUpstreamToAClosedPortIsRefusedWithoutTheAddress) {
  std::uint16_t port = 0;
  {
    asio::ip::tcp::acceptor gone(io, {asio::ip::make_address("127.0.0.1"), 0});
    port = gone.local_endpoint().port();
  }
  auto up = routes.route({"dev-1", port, protocol::tcp}, allowed({"*"}));
  ASSERT_TRUE(up.ok());
  const auto refused = connect(**up);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, errc::refused);
  EXPECT_EQ(refused->message.find("127.0.0.1"), std::string::npos) << refused->message;
  EXPECT_NE(refused->message.find("device dev-1 port " + std::to_string(port)), std::string::npos)
      << refused->message;
  EXPECT_NE(refused->log_detail.find("127.0.0.1"), std::string::npos) << refused->log_detail;
}

TEST_F(Router, AUdpUpstreamOpensAFlowSocketForEitherFamily) {
  for (const char* id : {"dev-1", "dev-6"}) {
    auto up = routes.route({id, 5353, protocol::udp}, allowed({"*/udp"}));
    ASSERT_TRUE(up.ok()) << id;
    EXPECT_FALSE(connect(**up).has_value()) << id;
  }
}

}  // namespace
}  // namespace tether::server
