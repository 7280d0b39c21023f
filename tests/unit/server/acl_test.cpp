#include "tether/server/acl.hpp"

#include <gtest/gtest.h>

namespace tether::server {
namespace {

using mux::protocol;

acl_rule rule(std::string_view text) {
  auto r = parse_acl_rule(text);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.message());
  return r.ok() ? r.value() : acl_rule{};
}

std::string acl_error(std::string_view text) {
  auto r = parse_acl_rule(text);
  return r.ok() ? "parsed" : r.message();
}

TEST(Glob, Matches) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*", "dev-42"));
  EXPECT_TRUE(glob_match("dev-42", "dev-42"));
  EXPECT_FALSE(glob_match("dev-42", "dev-421"));
  EXPECT_FALSE(glob_match("dev-42", "dev-4"));
  EXPECT_TRUE(glob_match("dev-*", "dev-"));
  EXPECT_TRUE(glob_match("dev-*", "dev-42"));
  EXPECT_FALSE(glob_match("dev-*", "dev"));
  EXPECT_FALSE(glob_match("dev-*", "xdev-42"));
  EXPECT_TRUE(glob_match("*-42", "dev-42"));
  EXPECT_TRUE(glob_match("d*4*2", "dev-42"));
  EXPECT_TRUE(glob_match("d*4*2", "d4442"));
  EXPECT_FALSE(glob_match("d*4*2", "d4423"));
  EXPECT_TRUE(glob_match("**a**", "bab"));
  EXPECT_FALSE(glob_match("Dev-*", "dev-1"));  // case-sensitive, like ids
}

TEST(Glob, PathologicalPatternStaysFast) {
  const std::string text(2000, 'a');
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*a*b", text));
}

TEST(AclRule, ParsesExactDeviceAndPort) {
  auto r = rule("dev-42:22");
  EXPECT_EQ(r.device_glob, "dev-42");
  EXPECT_EQ(r.port_min, 22);
  EXPECT_EQ(r.port_max, 22);
  EXPECT_FALSE(r.proto);
  EXPECT_EQ(r.text, "dev-42:22");
}

TEST(AclRule, ParsesStarsRangesAndProtocols) {
  auto all = rule("*");
  EXPECT_EQ(all.device_glob, "*");
  EXPECT_EQ(all.port_min, 1);
  EXPECT_EQ(all.port_max, 65535);
  EXPECT_FALSE(all.proto);

  auto r = rule("dev-*:8000-8099/tcp");
  EXPECT_EQ(r.device_glob, "dev-*");
  EXPECT_EQ(r.port_min, 8000);
  EXPECT_EQ(r.port_max, 8099);
  EXPECT_EQ(r.proto, protocol::tcp);

  auto u = rule("*:*/udp");
  EXPECT_EQ(u.port_min, 1);
  EXPECT_EQ(u.port_max, 65535);
  EXPECT_EQ(u.proto, protocol::udp);

  EXPECT_EQ(rule("*/tcp").proto, protocol::tcp);
  EXPECT_EQ(rule("a:1-1").port_max, 1);
  EXPECT_EQ(rule("a:65535").port_min, 65535);
}

TEST(AclRule, ErrorsNameThePatternAndTheProblem) {
  EXPECT_EQ(acl_error(""), "ACL pattern '': empty pattern");
  EXPECT_EQ(acl_error("dev-42"),
            "ACL pattern 'dev-42': expected DEVICE:PORT, e.g. dev-42:22, dev-*:8000-8099 or *:*");
  EXPECT_EQ(acl_error("a:b:c"),
            "ACL pattern 'a:b:c': expected DEVICE:PORT, e.g. dev-42:22, dev-*:8000-8099 or *:*");
  EXPECT_EQ(acl_error(":22"), "ACL pattern ':22': empty device (use * for any device)");
  EXPECT_EQ(acl_error("dev 42:22"),
            "ACL pattern 'dev 42:22': character ' ' cannot appear in a device id (allowed: A-Z "
            "a-z 0-9 . _ - and *)");
  EXPECT_EQ(acl_error("dev?:22"),
            "ACL pattern 'dev?:22': character '?' cannot appear in a device id (allowed: A-Z "
            "a-z 0-9 . _ - and *)");
  EXPECT_EQ(acl_error("dev:"), "ACL pattern 'dev:': empty port");
  EXPECT_EQ(acl_error("dev:ssh"),
            "ACL pattern 'dev:ssh': port 'ssh' is not a number, '*' or a range like 8000-8099");
  EXPECT_EQ(acl_error("dev:0"), "ACL pattern 'dev:0': port 0 out of range (1-65535)");
  EXPECT_EQ(acl_error("dev:65536"), "ACL pattern 'dev:65536': port 65536 out of range (1-65535)");
  EXPECT_EQ(acl_error("dev:99999999999999999999"),
            "ACL pattern 'dev:99999999999999999999': port 99999999999999999999 out of range "
            "(1-65535)");
  EXPECT_EQ(acl_error("dev:90-80"), "ACL pattern 'dev:90-80': port range 90-80 is backwards");
  EXPECT_EQ(acl_error("dev:80-"),
            "ACL pattern 'dev:80-': port range '80-' needs a first and a last port, e.g. "
            "8000-8099");
  EXPECT_EQ(acl_error("dev:-80"),
            "ACL pattern 'dev:-80': port range '-80' needs a first and a last port, e.g. "
            "8000-8099");
  EXPECT_EQ(acl_error("dev:1-x"),
            "ACL pattern 'dev:1-x': port 'x' is not a number, '*' or a range like 8000-8099");
  EXPECT_EQ(acl_error("dev:22/sctp"),
            "ACL pattern 'dev:22/sctp': unknown protocol 'sctp' (use /tcp or /udp)");
  EXPECT_EQ(acl_error("dev:22/"), "ACL pattern 'dev:22/': unknown protocol '' (use /tcp or /udp)");
  EXPECT_EQ(acl_error(std::string(129, 'a') + ":22"),
            "ACL pattern '" + std::string(129, 'a') + ":22': device pattern longer than 128");
}

TEST(AclRule, MatchesDevicePortAndProtocol) {
  auto r = rule("dev-*:8000-8099/tcp");
  EXPECT_TRUE(r.matches("dev-1", 8000, protocol::tcp));
  EXPECT_TRUE(r.matches("dev-1", 8099, protocol::tcp));
  EXPECT_FALSE(r.matches("dev-1", 7999, protocol::tcp));
  EXPECT_FALSE(r.matches("dev-1", 8100, protocol::tcp));
  EXPECT_FALSE(r.matches("dev-1", 8000, protocol::udp));
  EXPECT_FALSE(r.matches("link-1", 8000, protocol::tcp));
}

TEST(Acl, DeniesByDefault) {
  acl none;
  EXPECT_FALSE(none.allows("dev-42", 22, protocol::tcp));
  acl empty(std::vector<acl_rule>{});
  EXPECT_FALSE(empty.allows("dev-42", 22, protocol::tcp));
}

TEST(Acl, AllowsWhenAnyRuleMatches) {
  acl a({rule("dev-42:22"), rule("dev-*:80"), rule("cam-*:*/udp")});
  EXPECT_TRUE(a.allows("dev-42", 22, protocol::tcp));
  EXPECT_TRUE(a.allows("dev-42", 22, protocol::udp));  // no suffix: both
  EXPECT_FALSE(a.allows("dev-43", 22, protocol::tcp));
  EXPECT_TRUE(a.allows("dev-43", 80, protocol::tcp));
  EXPECT_FALSE(a.allows("dev-43", 443, protocol::tcp));
  EXPECT_TRUE(a.allows("cam-1", 5353, protocol::udp));
  EXPECT_FALSE(a.allows("cam-1", 5353, protocol::tcp));
  EXPECT_EQ(a.rules().size(), 3u);
}

TEST(Acl, StarAllowsEverything) {
  acl a({rule("*")});
  EXPECT_TRUE(a.allows("anything", 1, protocol::tcp));
  EXPECT_TRUE(a.allows("x", 65535, protocol::udp));
  EXPECT_FALSE(a.allows("x", 0, protocol::tcp));  // port 0 is never a target
}

}  // namespace
}  // namespace tether::server
