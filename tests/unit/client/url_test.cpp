#include "tether/client/url.hpp"
#include "tether/transport/host.hpp"

#include <gtest/gtest.h>

namespace tether::client {
namespace {

server_url url_of(std::string_view text) {
  auto r = parse_server_url(text);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.message());
  return r.ok() ? r.value() : server_url{};
}

std::string url_error(std::string_view text) {
  auto r = parse_server_url(text);
  return r.ok() ? "parsed" : r.message();
}

TEST(ServerUrl, TlsWithAndWithoutPort) {
  auto a = url_of("tls://tunnel.example.com:8443");
  EXPECT_EQ(a.kind, scheme::tls);
  EXPECT_EQ(a.host, "tunnel.example.com");
  EXPECT_EQ(a.port, 8443);
  EXPECT_EQ(a.user, "");
  EXPECT_EQ(a.text(), "tls://tunnel.example.com:8443");

  auto b = url_of("tls://127.0.0.1");
  EXPECT_EQ(b.host, "127.0.0.1");
  EXPECT_EQ(b.port, 7443);

  auto c = url_of("TLS://host/");  // scheme case and a trailing slash do not matter
  EXPECT_EQ(c.kind, scheme::tls);
  EXPECT_EQ(c.host, "host");
}

TEST(ServerUrl, SshWithUserAndPort) {
  auto a = url_of("ssh://alice@bastion:2222");
  EXPECT_EQ(a.kind, scheme::ssh);
  EXPECT_EQ(a.user, "alice");
  EXPECT_EQ(a.host, "bastion");
  EXPECT_EQ(a.port, 2222);
  EXPECT_EQ(a.text(), "ssh://alice@bastion:2222");

  auto b = url_of("ssh://host");
  EXPECT_EQ(b.user, "");  // the caller fills in the local user
  EXPECT_EQ(b.port, 22);

  auto c = url_of("ssh://user@host:999");
  EXPECT_EQ(c.user, "user");
  EXPECT_EQ(c.port, 999);
}

TEST(ServerUrl, Ipv6Hosts) {
  auto a = url_of("tls://[::1]:7443");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 7443);
  EXPECT_EQ(a.text(), "tls://[::1]:7443");

  auto b = url_of("ssh://bob@[2001:db8::5]");
  EXPECT_EQ(b.user, "bob");
  EXPECT_EQ(b.host, "2001:db8::5");
  EXPECT_EQ(b.port, 22);
  EXPECT_EQ(b.text(), "ssh://bob@[2001:db8::5]:22");
}

TEST(ServerUrl, Errors) {
  const std::string forms = "tls://HOST[:PORT] or ssh://[USER@]HOST[:PORT]";
  EXPECT_EQ(url_error("host:7443"), "server URL 'host:7443': expected " + forms);
  EXPECT_EQ(url_error(""), "server URL '': expected " + forms);
  EXPECT_EQ(url_error("http://host"),
            "server URL 'http://host': unknown scheme 'http' (use " + forms + ")");
  EXPECT_EQ(url_error("tls://"), "server URL 'tls://': missing host");
  EXPECT_EQ(url_error("tls://:7443"), "server URL 'tls://:7443': missing host");
  EXPECT_EQ(url_error("tls://host:"), "server URL 'tls://host:': port '' is not a number");
  EXPECT_EQ(url_error("tls://host:https"),
            "server URL 'tls://host:https': port 'https' is not a number");
  EXPECT_EQ(url_error("tls://host:0"), "server URL 'tls://host:0': port 0 out of range (1-65535)");
  EXPECT_EQ(url_error("tls://host:65536"),
            "server URL 'tls://host:65536': port 65536 out of range (1-65535)");
  EXPECT_EQ(url_error("tls://host/path"),
            "server URL 'tls://host/path': unexpected '/path' after the host");
  EXPECT_EQ(url_error("tls://host?x=1"),
            "server URL 'tls://host?x=1': unexpected '?x=1' after the host");
  EXPECT_EQ(url_error("tls://alice@host"),
            "server URL 'tls://alice@host': a user name only goes with ssh://");
  EXPECT_EQ(url_error("ssh://alice:pw@host"),
            "server URL 'ssh://alice:pw@host': passwords in URLs are not supported (use a key or "
            "an ssh-agent)");
  EXPECT_EQ(url_error("ssh://@host"), "server URL 'ssh://@host': empty user name before '@'");
  EXPECT_EQ(url_error("ssh://al ice@host"),
            "server URL 'ssh://al ice@host': user name 'al ice' has characters other than A-Z "
            "a-z 0-9 . _ - + $");
  EXPECT_EQ(url_error("tls://::1:7443"),
            "server URL 'tls://::1:7443': write IPv6 addresses in brackets, like [::1]:7443");
  EXPECT_EQ(url_error("tls://[::1"), "server URL 'tls://[::1': missing ']' after the IPv6 address");
  EXPECT_EQ(url_error("tls://[::1]7443"),
            "server URL 'tls://[::1]7443': expected ':PORT' after ']'");
  EXPECT_EQ(url_error("tls://[host]:1"),
            "server URL 'tls://[host]:1': host '[host]': brackets must hold an IPv6 address");
  EXPECT_EQ(url_error("tls://bad_host!:1"),
            "server URL 'tls://bad_host!:1': host 'bad_host!' is not a host name or IP address");
}

TEST(Host, ParseAndValidate) {
  EXPECT_EQ(parse_host("example.com").value(), "example.com");
  EXPECT_EQ(parse_host("10.0.0.1").value(), "10.0.0.1");
  EXPECT_EQ(parse_host("[fe80::1]").value(), "fe80::1");
  EXPECT_EQ(parse_host("").message(), "empty host");
  EXPECT_EQ(parse_host("::1").message(),
            "host '::1': write IPv6 addresses in brackets, like [::1]");
  EXPECT_EQ(parse_host("[::1").message(), "host '[::1': missing ']'");
  EXPECT_EQ(parse_host("-x").message(), "host '-x' is not a host name or IP address");
  EXPECT_TRUE(transport::is_valid_host("::"));
  EXPECT_TRUE(transport::is_valid_host("a-b.c_d"));
  EXPECT_FALSE(transport::is_valid_host("a b"));
  EXPECT_FALSE(transport::is_valid_host(":::"));
  EXPECT_FALSE(transport::is_valid_host(std::string(254, 'a')));
}

// Found by fuzz_url: inet_pton stopped at the NUL, so "[::" NUL "junk]" passed as "::".
TEST(Host, NulInsideAnIpv6LiteralIsRefused) {
  using namespace std::string_view_literals;
  EXPECT_FALSE(transport::is_valid_host("::1\0junk"sv));
  EXPECT_FALSE(transport::is_valid_host("::\0"sv));
  EXPECT_FALSE(parse_host("[::\0\0\0\x8e[::\x04\x04\x04\x04" "1]"sv).ok());
  EXPECT_FALSE(parse_server_url("tls://[::1\0:x]:7443"sv).ok());
  EXPECT_TRUE(transport::is_valid_host("::1"sv));
}

}  // namespace
}  // namespace tether::client
