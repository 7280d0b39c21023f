#include "tether/client/stdio_target.hpp"

#include <gtest/gtest.h>

namespace tether::client {
namespace {

mux::target target_of(std::string_view text) {
  auto r = parse_stdio_target(text);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.message());
  return r.ok() ? r.value() : mux::target{};
}

std::string stdio_target_error(std::string_view text) {
  auto r = parse_stdio_target(text);
  return r.ok() ? "parsed" : r.message();
}

TEST(StdioTarget, DeviceAndPort) {
  const auto t = target_of("dev-42:22");
  EXPECT_EQ(t.device, "dev-42");
  EXPECT_EQ(t.port, 22);
  EXPECT_EQ(t.proto, mux::protocol::tcp);
  EXPECT_EQ(target_of("link_12345:2222").device, "link_12345");
  EXPECT_EQ(target_of("127.0.1.19:22").device, "127.0.1.19");
  EXPECT_EQ(target_of("box.example.com:65535").port, 65535);
}

TEST(StdioTarget, BracketedIpv6) {
  const auto t = target_of("[::1]:22");
  EXPECT_EQ(t.device, "::1");
  EXPECT_EQ(t.port, 22);
  EXPECT_EQ(target_of("[fe80::1:2]:2222").device, "fe80::1:2");
}

// ssh's %h holds an IPv6 address without brackets (`ssh ::1` gives "::1:22" for %h:%p).
TEST(StdioTarget, UnbracketedIpv6AsSshHandsItOver) {
  const auto t = target_of("::1:22");
  EXPECT_EQ(t.device, "::1");
  EXPECT_EQ(t.port, 22);
  const auto u = target_of("fd00:1:2::42:2222");
  EXPECT_EQ(u.device, "fd00:1:2::42");
  EXPECT_EQ(u.port, 2222);
}

TEST(StdioTarget, ErrorsNameTheOptionAndThePart) {
  EXPECT_EQ(stdio_target_error("dev-42"),
            "--stdio 'dev-42': expected DEVICE:PORT (or [IPv6]:PORT)");
  EXPECT_EQ(stdio_target_error(""), "--stdio '': expected DEVICE:PORT (or [IPv6]:PORT)");
  EXPECT_EQ(stdio_target_error("dev-42:"),
            "--stdio 'dev-42:': expected DEVICE:PORT (or [IPv6]:PORT): the port is missing");
  EXPECT_EQ(stdio_target_error(":22"), "--stdio ':22': empty device");
  EXPECT_EQ(stdio_target_error("dev-42:ssh"), "--stdio 'dev-42:ssh': port 'ssh' is not a number");
  EXPECT_EQ(stdio_target_error("dev-42:0"), "--stdio 'dev-42:0': port 0 out of range (1-65535)");
  EXPECT_EQ(stdio_target_error("dev-42:65536"),
            "--stdio 'dev-42:65536': port 65536 out of range (1-65535)");
  EXPECT_EQ(stdio_target_error("dev-42:99999999999999999999"),
            "--stdio 'dev-42:99999999999999999999': port 99999999999999999999 out of range "
            "(1-65535)");
  EXPECT_EQ(stdio_target_error("dev 42:22"),
            "--stdio 'dev 42:22': device 'dev 42' is not a device id or host name "
            "(A-Z a-z 0-9 . _ -)");
  EXPECT_EQ(stdio_target_error("dev-42:22:33"),
            "--stdio 'dev-42:22:33': expected DEVICE:PORT (or [IPv6]:PORT) (write IPv6 "
            "addresses in brackets, like [::1]:22)");
}

TEST(StdioTarget, BracketErrors) {
  EXPECT_EQ(stdio_target_error("[::1]"), "--stdio '[::1]': expected DEVICE:PORT (or [IPv6]:PORT)");
  EXPECT_EQ(stdio_target_error("[::1:22"), "--stdio '[::1:22': missing ']' after the IPv6 address");
  EXPECT_EQ(stdio_target_error("[::1]x:22"),
            "--stdio '[::1]x:22': expected DEVICE:PORT (or [IPv6]:PORT)");
  EXPECT_NE(stdio_target_error("[dev-42]:22"), "parsed");
  EXPECT_NE(stdio_target_error("[::1]]:22"), "parsed");
}

TEST(StdioTarget, LongestDeviceIdIsBounded) {
  EXPECT_EQ(target_of(std::string(253, 'a') + ":22").device.size(), 253u);
  // Too long is said as such, not as a wrong character.
  const std::string long_id(300, 'a');
  EXPECT_EQ(stdio_target_error(long_id + ":22"),
            "--stdio '" + long_id +
                ":22': the device is 300 characters long; a device id or "
                "host name has at most 253");
}

}  // namespace
}  // namespace tether::client
