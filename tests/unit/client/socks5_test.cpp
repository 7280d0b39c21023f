#include "tether/client/socks5.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace tether::client::socks5 {
namespace {

using bytes = std::vector<std::uint8_t>;

TEST(Socks5, GreetingMustOfferNoAuthentication) {
  EXPECT_EQ(parse_greeting(bytes{5, 1, 0}), true);
  EXPECT_EQ(parse_greeting(bytes{5, 2, 2, 0}), true);
  EXPECT_EQ(parse_greeting(bytes{5, 1, 2}), false);  // username/password only
  EXPECT_EQ(parse_greeting(bytes{4, 1, 0}), std::nullopt);  // SOCKS4
  EXPECT_EQ(parse_greeting(bytes{5, 2, 0}), std::nullopt);  // shorter than it says
}

TEST(Socks5, ConnectByHostNameIsADevice) {
  bytes req{5, 1, 0, 3, 6, 'd', 'e', 'v', '-', '4', '2', 0, 80};
  const auto r = parse_request(req);
  EXPECT_EQ(r.refusal, reply::succeeded);
  EXPECT_EQ(r.target.device, "dev-42");
  EXPECT_EQ(r.target.port, 80);
  EXPECT_EQ(r.target.proto, mux::protocol::tcp);
}

TEST(Socks5, ConnectByAddress) {
  auto r = parse_request(bytes{5, 1, 0, 1, 10, 0, 0, 7, 0x1f, 0x90});
  EXPECT_EQ(r.refusal, reply::succeeded);
  EXPECT_EQ(r.target.device, "10.0.0.7");
  EXPECT_EQ(r.target.port, 8080);
  bytes v6{5, 1, 0, 4};
  for (int i = 0; i < 15; ++i) v6.push_back(0);
  v6.push_back(1);
  v6.push_back(0);
  v6.push_back(22);
  r = parse_request(v6);
  EXPECT_EQ(r.refusal, reply::succeeded);
  EXPECT_EQ(r.target.device, "::1");
  EXPECT_EQ(r.target.port, 22);
}

TEST(Socks5, RefusalsSayWhy) {
  EXPECT_EQ(parse_request(bytes{5, 2, 0, 1, 1, 2, 3, 4, 0, 80}).refusal,
            reply::command_not_supported);  // BIND
  EXPECT_EQ(parse_request(bytes{5, 3, 0, 1, 1, 2, 3, 4, 0, 80}).refusal,
            reply::command_not_supported);  // UDP ASSOCIATE
  EXPECT_EQ(parse_request(bytes{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}).refusal,
            reply::address_type_not_supported);
  EXPECT_EQ(parse_request(bytes{5, 1, 0, 3, 3, 'a', '/', 'b', 0, 80}).refusal,
            reply::host_unreachable);  // never a device id, and kept out of logs
  EXPECT_EQ(parse_request(bytes{5, 1, 0, 3, 1, 'a', 0, 0}).refusal, reply::general_failure);
  EXPECT_EQ(parse_request(bytes{5, 1, 0, 3, 2, 'a', 0, 80}).refusal, reply::general_failure);
}

TEST(Socks5, TunnelRefusalsMapToReplyCodes) {
  EXPECT_EQ(reply_for(errc::forbidden), reply::not_allowed);
  EXPECT_EQ(reply_for(errc::unknown_device), reply::host_unreachable);
  EXPECT_EQ(reply_for(errc::refused), reply::connection_refused);
  EXPECT_EQ(reply_for(errc::timed_out), reply::ttl_expired);
  EXPECT_EQ(reply_for(errc::session_lost), reply::general_failure);
}

}  // namespace
}  // namespace tether::client::socks5
