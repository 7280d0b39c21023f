#include "tether/client/mapping.hpp"

#include <gtest/gtest.h>

namespace tether::client {
namespace {

using mux::protocol;

mapping mapping_of(std::string_view spec, protocol p = protocol::tcp) {
  auto r = parse_mapping(spec, p);
  EXPECT_TRUE(r.ok()) << spec << ": " << (r.ok() ? "" : r.message());
  return r.ok() ? r.value() : mapping{};
}

std::string mapping_error(std::string_view spec, protocol p = protocol::tcp) {
  auto r = parse_mapping(spec, p);
  return r.ok() ? "parsed" : r.message();
}

TEST(Mapping, ThreePartsBindLoopback) {
  auto m = mapping_of("2222:dev-42:22");
  EXPECT_EQ(m.proto, protocol::tcp);
  EXPECT_EQ(m.bind_host, "127.0.0.1");
  EXPECT_EQ(m.local_port, 2222);
  EXPECT_EQ(m.device, "dev-42");
  EXPECT_EQ(m.device_port, 22);
  EXPECT_EQ(m.text(), "127.0.0.1:2222 -> dev-42:22 tcp");
}

TEST(Mapping, UdpAndPortZero) {
  auto m = mapping_of("0:dev-42:53", protocol::udp);
  EXPECT_EQ(m.proto, protocol::udp);
  EXPECT_EQ(m.local_port, 0);
  EXPECT_EQ(m.text(), "127.0.0.1:0 -> dev-42:53 udp");
}

TEST(Mapping, BindAddresses) {
  EXPECT_EQ(mapping_of("127.0.0.2:80:dev:80").bind_host, "127.0.0.2");
  EXPECT_EQ(mapping_of("localhost:80:dev:80").bind_host, "localhost");
  EXPECT_EQ(mapping_of("*:80:dev:80").bind_host, "0.0.0.0");
  EXPECT_EQ(mapping_of(":80:dev:80").bind_host, "0.0.0.0");
  EXPECT_EQ(mapping_of("0.0.0.0:80:dev:80").bind_host, "0.0.0.0");
  auto v6 = mapping_of("[::1]:2222:dev-42:22");
  EXPECT_EQ(v6.bind_host, "::1");
  EXPECT_EQ(v6.text(), "[::1]:2222 -> dev-42:22 tcp");
}

TEST(Mapping, DeviceMayBeAHostOrBracketedIpv6ForSsh) {
  EXPECT_EQ(mapping_of("8080:web.internal:80").device, "web.internal");
  EXPECT_EQ(mapping_of("8080:10.0.0.7:80").device, "10.0.0.7");
  auto m = mapping_of("[::1]:8080:[::1]:80");
  EXPECT_EQ(m.device, "::1");
  EXPECT_EQ(m.text(), "[::1]:8080 -> [::1]:80 tcp");
}

TEST(Mapping, PortBounds) {
  EXPECT_EQ(mapping_of("65535:d:65535").local_port, 65535);
  EXPECT_EQ(mapping_of("1:d:1").device_port, 1);
}

TEST(Mapping, ShapeErrors) {
  const std::string form = "expected [BIND:]LPORT:DEVICE:DPORT";
  EXPECT_EQ(mapping_error("abc"), "-L 'abc': " + form);
  EXPECT_EQ(mapping_error(""), "-L '': " + form);
  EXPECT_EQ(mapping_error("2222:22"), "-L '2222:22': " + form);
  EXPECT_EQ(mapping_error("abc", protocol::udp), "-U 'abc': " + form);
  EXPECT_EQ(
      mapping_error("::1:2222:dev:22"),
      "-L '::1:2222:dev:22': " + form + " (write IPv6 addresses in brackets, like [::1]:2222)");
  EXPECT_EQ(mapping_error("[::1:2222:dev:22"),
            "-L '[::1:2222:dev:22': " + form + " (brackets go around a whole IPv6 address)");
  EXPECT_EQ(mapping_error("[::1]x:2222:dev:22"),
            "-L '[::1]x:2222:dev:22': " + form + " (brackets go around a whole IPv6 address)");
  EXPECT_EQ(mapping_error("a[b]:2222:dev:22"),
            "-L 'a[b]:2222:dev:22': " + form + " (brackets go around a whole IPv6 address)");
}

TEST(Mapping, PartErrors) {
  EXPECT_EQ(mapping_error("70000:dev-42:22"),
            "-L '70000:dev-42:22': local port 70000 out of range (0-65535)");
  EXPECT_EQ(mapping_error("x:dev-42:22"), "-L 'x:dev-42:22': local port 'x' is not a number");
  EXPECT_EQ(mapping_error(":dev-42:22"), "-L ':dev-42:22': local port '' is not a number");
  EXPECT_EQ(mapping_error("-1:dev-42:22"), "-L '-1:dev-42:22': local port '-1' is not a number");
  EXPECT_EQ(mapping_error("2222:dev-42:0"),
            "-L '2222:dev-42:0': device port 0 out of range (1-65535)");
  EXPECT_EQ(mapping_error("2222:dev-42:65536", protocol::udp),
            "-U '2222:dev-42:65536': device port 65536 out of range (1-65535)");
  EXPECT_EQ(mapping_error("2222:dev-42:ssh"),
            "-L '2222:dev-42:ssh': device port 'ssh' is not a number");
  EXPECT_EQ(mapping_error("2222:dev-42:99999999999999999999999"),
            "-L '2222:dev-42:99999999999999999999999': device port 99999999999999999999999 out "
            "of range (1-65535)");
  EXPECT_EQ(mapping_error("2222::22"), "-L '2222::22': empty device");
  EXPECT_EQ(mapping_error("2222:dev 42:22"),
            "-L '2222:dev 42:22': device 'dev 42' is not a device id or host name (A-Z a-z 0-9 . "
            "_ -)");
  const std::string long_id(300, 'd');
  EXPECT_EQ(mapping_error("2222:" + long_id + ":22"),
            "-L '2222:" + long_id +
                ":22': the device is 300 characters long; a device id or "
                "host name has at most 253");
  EXPECT_EQ(mapping_error("2222:" + std::string(253, 'd') + ":22"), "parsed");
  EXPECT_EQ(mapping_error("2222:[dev]:22"),
            "-L '2222:[dev]:22': device: host '[dev]': brackets must hold an IPv6 address");
  EXPECT_EQ(mapping_error("bad host:2222:dev:22"),
            "-L 'bad host:2222:dev:22': bind address: host 'bad host' is not a host name or IP "
            "address");
  EXPECT_EQ(mapping_error("[1.2.3.4]:2222:dev:22"),
            "-L '[1.2.3.4]:2222:dev:22': bind address: host '[1.2.3.4]': brackets must hold an "
            "IPv6 address");
}

// Found by fuzz_mapping: a NUL inside a bracketed device or bind address hid the rest of it
// (brackets and bytes of any kind) from the IPv6 check.
TEST(Mapping, NulInsideABracketedAddressIsRefused) {
  using namespace std::string_view_literals;
  EXPECT_FALSE(parse_mapping("2:22:[d::42\0\xd3" "0[\xd3\0*\0]:42"sv, protocol::tcp).ok());
  EXPECT_FALSE(parse_mapping("[::1\0evil]:2222:dev-42:22"sv, protocol::tcp).ok());
  EXPECT_TRUE(parse_mapping("[::1]:2222:[fd00::42]:22"sv, protocol::tcp).ok());
}

}  // namespace
}  // namespace tether::client
