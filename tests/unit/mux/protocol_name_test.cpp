// Protocol names both ways: protocol_from_name reads back what protocol_name writes for the
// protocols a user forwards, and refuses everything else, the catalog included, since every
// caller hands its result on as a port's protocol.

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "tether/mux/tunnel.hpp"

namespace tether::mux {
namespace {

TEST(ProtocolName, ForwardedProtocolsRoundTrip) {
  for (const auto p : {protocol::tcp, protocol::udp}) {
    const auto back = protocol_from_name(protocol_name(p));
    ASSERT_TRUE(back.has_value()) << protocol_name(p);
    EXPECT_EQ(*back, p);
  }
}

TEST(ProtocolName, NamesAreExact) {
  EXPECT_EQ(protocol_from_name("tcp"), protocol::tcp);
  EXPECT_EQ(protocol_from_name("udp"), protocol::udp);
  for (const std::string name : {"", "TCP", "Udp", " tcp", "udp ", "tc", "udpx", "/udp"})
    EXPECT_FALSE(protocol_from_name(name).has_value()) << '"' << name << '"';
  // A name with a NUL inside is not "tcp" cut short.
  EXPECT_FALSE(protocol_from_name(std::string_view("tcp\0", 4)).has_value());
}

TEST(ProtocolName, CatalogIsNotANameUsersGive) {
  EXPECT_STREQ(protocol_name(protocol::catalog), "catalog");
  EXPECT_FALSE(protocol_from_name("catalog").has_value());
}

TEST(ProtocolName, UsableAtCompileTime) {
  static_assert(protocol_from_name("udp") == protocol::udp);
  static_assert(!protocol_from_name("catalog"));
}

}  // namespace
}  // namespace tether::mux
