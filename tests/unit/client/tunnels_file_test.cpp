#include "tether/client/tunnels_file.hpp"

#include <gtest/gtest.h>

#include "tether/toml_check.hpp"

namespace tether::client {
namespace {

using mux::protocol;

tunnels_file parse(std::string_view text) {
  return parse_tunnels_file(text, "/etc/tether/tunnels.toml");
}

std::string tunnels_file_error(std::string_view text) {
  try {
    parse(text);
  } catch (const config_error& e) {
    return e.what();
  }
  return "parsed";
}

constexpr std::string_view one_server = R"(
server = "tls://tunnel.example.com:7443"
ca = "ca.pem"
token_file = "/secrets/token"
connect_timeout = 2.5

[[tunnel]]
name = "pi-ssh"
local = "127.0.0.1:2222"
device = "dev-42"
port = 22

[[tunnel]]
local = 5353
device = "dev-42"
port = 53
proto = "udp"
)";

TEST(TunnelsFile, OneServer) {
  const auto f = parse(one_server);
  ASSERT_EQ(f.servers.size(), 1u);
  const auto& s = f.servers[0];
  EXPECT_EQ(s.settings.url.text(), "tls://tunnel.example.com:7443");
  EXPECT_EQ(s.settings.ca_file, "/etc/tether/ca.pem");  // relative to the file
  EXPECT_EQ(s.settings.token_file, "/secrets/token");
  EXPECT_EQ(s.settings.connect_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(s.settings.wait_for_session, std::chrono::milliseconds(30000));
  // Messages about the server point at its URL's line, not at the top of the file; those
  // about its token file at that key's.
  EXPECT_EQ(s.line, 2u);
  EXPECT_EQ(s.token_file_line, 4u);
  ASSERT_EQ(s.tunnels.size(), 2u);
  EXPECT_EQ(s.tunnels[0].name, "pi-ssh");
  EXPECT_EQ(s.tunnels[0].map.text(), "127.0.0.1:2222 -> dev-42:22 tcp");
  EXPECT_EQ(s.tunnels[0].line, 7u);
  EXPECT_EQ(s.tunnels[1].name, "");
  EXPECT_EQ(s.tunnels[1].label(), "dev-42:53/udp");
  EXPECT_EQ(s.tunnels[1].map.text(), "127.0.0.1:5353 -> dev-42:53 udp");
}

TEST(TunnelsFile, SeveralServersEachWithItsSettings) {
  const auto f = parse(R"(
[[server]]
url = "tls://eu.example.com"
pin = "sha256:00"
[[server.tunnel]]
name = "a"
local = "[::1]:0"
device = "dev-1"
port = 80

[[server]]
url = "ssh://ops@jump.example.com:2200"
identity = ["keys/id_ed25519", "/k2"]
known_hosts = "kh"
accept_new_host_key = true
[[server.tunnel]]
local = "*:8022"
device = "10.0.0.7"
port = 22
)");
  ASSERT_EQ(f.servers.size(), 2u);
  EXPECT_EQ(f.servers[0].line, 2u);  // its [[server]] line
  EXPECT_EQ(f.servers[1].line, 11u);
  EXPECT_EQ(f.servers[1].token_file_line, 0u);  // none
  EXPECT_EQ(f.servers[0].settings.pin, "sha256:00");
  EXPECT_EQ(f.servers[0].tunnels[0].map.bind_host, "::1");
  const auto& ssh = f.servers[1].settings;
  EXPECT_EQ(ssh.url.text(), "ssh://ops@jump.example.com:2200");
  ASSERT_EQ(ssh.identity_files.size(), 2u);
  EXPECT_EQ(ssh.identity_files[0], "/etc/tether/keys/id_ed25519");
  EXPECT_EQ(ssh.identity_files[1], "/k2");
  EXPECT_EQ(ssh.known_hosts, "/etc/tether/kh");
  EXPECT_TRUE(ssh.accept_new_host_key);
  EXPECT_EQ(f.servers[1].tunnels[0].map.bind_host, "0.0.0.0");
  EXPECT_EQ(f.servers[1].tunnels[0].map.device, "10.0.0.7");
}

TEST(TunnelsFile, ErrorsNameFileLineAndKey) {
  const std::string base = "server = \"tls://s\"\n[[tunnel]]\nlocal = 2222\ndevice = \"d\"\n";
  EXPECT_EQ(tunnels_file_error(base + "port = 70000\n"),
            "/etc/tether/tunnels.toml:5: tunnel[0].port: 70000 is above the maximum 65535");
  EXPECT_EQ(tunnels_file_error(base),
            "/etc/tether/tunnels.toml:2: tunnel[0].port: missing (the device port, like 22)");
  EXPECT_EQ(tunnels_file_error(base + "port = 22\nprot = \"udp\"\n"),
            "/etc/tether/tunnels.toml:6: tunnel[0].prot: unknown key (did you mean 'proto'?)");
  EXPECT_EQ(tunnels_file_error(base + "port = 22\nproto = \"sctp\"\n"),
            "/etc/tether/tunnels.toml:6: tunnel[0].proto: 'sctp' is not a protocol (use \"tcp\" or "
            "\"udp\")");
  EXPECT_EQ(tunnels_file_error(base + "port = 22\nca = \"x\"\n"),
            "/etc/tether/tunnels.toml:6: tunnel[0].ca: unknown key here; top-level keys go above "
            "the first [[...]] section");
  EXPECT_EQ(tunnels_file_error(
                "server = \"tls://s\"\n[[tunnel]]\nlocal = \"a:b:c\"\ndevice = \"d\"\nport = 1\n"),
            "/etc/tether/tunnels.toml:3: tunnel[0].local: 'a:b:c': expected [BIND:]PORT, like "
            "2222, 127.0.0.1:2222 or [::1]:2222");
  EXPECT_EQ(tunnels_file_error(
                "server = \"tls://s\"\n[[tunnel]]\nlocal = 99999\ndevice = \"d\"\nport = 1\n"),
            "/etc/tether/tunnels.toml:3: tunnel[0].local: local port 99999 out of range (0-65535)");
  EXPECT_EQ(tunnels_file_error("server = \"http://s\"\n"),
            "/etc/tether/tunnels.toml:1: server: server URL 'http://s': unknown scheme 'http' "
            "(use tls://HOST[:PORT] or ssh://[USER@]HOST[:PORT])");
  EXPECT_EQ(tunnels_file_error("server = \"tls://s\"\n"),
            "/etc/tether/tunnels.toml:1: tunnel: no [[tunnel]] sections: nothing to forward");
  EXPECT_EQ(tunnels_file_error("ca = \"x\"\n"),
            "/etc/tether/tunnels.toml: server: missing (the server's URL, like server = "
            "\"tls://tunnel.example.com:7443\", or [[server]] sections with url = ...)");
  EXPECT_EQ(tunnels_file_error("server = \"tls://s\"\nconnect_timeout = 0\n"),
            "/etc/tether/tunnels.toml:2: connect_timeout: 0 is out of range: give seconds from "
            "0.001 to 86400");
  EXPECT_EQ(tunnels_file_error("server = [\n"),
            "/etc/tether/tunnels.toml:1: Error while parsing array: encountered end-of-file");
}

TEST(TunnelsFile, MaxStreamWindowIsBoundedAndForTlsOnly) {
  const std::string tunnel = "[[tunnel]]\nlocal = 1\ndevice = \"d\"\nport = 22\n";
  EXPECT_EQ(parse("server = \"tls://s\"\nmax_stream_window = 67108864\n" + tunnel)
                .servers[0]
                .settings.max_stream_window,
            64u << 20);
  EXPECT_EQ(parse("server = \"tls://s\"\n" + tunnel).servers[0].settings.max_stream_window, 0u);
  EXPECT_EQ(tunnels_file_error("server = \"tls://s\"\nmax_stream_window = 1000\n" + tunnel),
            "/etc/tether/tunnels.toml:2: max_stream_window: 1000 is below the minimum 65536");
  EXPECT_EQ(tunnels_file_error("server = \"ssh://s\"\nmax_stream_window = 65536\n" + tunnel),
            "/etc/tether/tunnels.toml:2: max_stream_window: for tls:// servers only (SSH channels "
            "have the server's windows)");
}

TEST(TunnelsFile, SettingsBelongToTheirKindOfServer) {
  EXPECT_EQ(tunnels_file_error("server = \"ssh://s\"\ntoken_file = \"t\"\n"),
            "/etc/tether/tunnels.toml:2: token_file: for tls:// servers only (ssh:// uses "
            "identity or ssh-agent)");
  EXPECT_EQ(
      tunnels_file_error("server = \"tls://s\"\nidentity = \"k\"\n"),
      "/etc/tether/tunnels.toml:2: identity: for ssh:// servers only (tls:// uses token_file)");
  EXPECT_EQ(tunnels_file_error("server = \"tls://s\"\nca = \"c\"\npin = \"sha256:00\"\n"),
            "/etc/tether/tunnels.toml:3: pin: give ca or pin, not both (a pinned key is trusted "
            "without a CA)");
  EXPECT_EQ(
      tunnels_file_error("server = \"ssh://s\"\n[[tunnel]]\nlocal = 1\ndevice = \"d\"\nport = 53\n"
                         "proto = \"udp\"\n"),
      "/etc/tether/tunnels.toml:6: tunnel[0].proto: udp needs a tls:// server (SSH forwards "
      "only TCP)");
}

TEST(TunnelsFile, SeveralServersKeepTheirTunnelsUnderThem) {
  EXPECT_EQ(tunnels_file_error("ca = \"x\"\n[[server]]\nurl = \"tls://s\"\n"),
            "/etc/tether/tunnels.toml:1: ca: with [[server]] sections, settings go inside each "
            "[[server]]");
  EXPECT_EQ(tunnels_file_error("[[tunnel]]\nlocal = 1\n[[server]]\nurl = \"tls://s\"\n"),
            "/etc/tether/tunnels.toml:1: tunnel: with [[server]] sections, tunnels go under "
            "their server as [[server.tunnel]]");
  EXPECT_EQ(tunnels_file_error("[[server]]\nserver = \"tls://s\"\n"),
            "/etc/tether/tunnels.toml:2: server[0].server: unknown key");
  EXPECT_EQ(tunnels_file_error("[[server]]\nurl = \"tls://s\"\n"),
            "/etc/tether/tunnels.toml:1: server[0].tunnel: no [[server.tunnel]] sections under "
            "this server: nothing to forward");
}

TEST(TunnelsFile, NamesAndLocalAddressesAreUnique) {
  const std::string t = "[[server.tunnel]]\ndevice = \"d\"\nport = 1\n";
  EXPECT_EQ(tunnels_file_error("[[server]]\nurl = \"tls://a\"\n" + t + "name = \"x\"\nlocal = 1\n" +
                               "[[server]]\nurl = \"tls://b\"\n" + t + "name = \"x\"\nlocal = 2\n"),
            "/etc/tether/tunnels.toml:10: name: 'x' is already the name of the tunnel at line 3");
  EXPECT_EQ(
      tunnels_file_error("server = \"tls://a\"\n[[tunnel]]\ndevice = \"d\"\nport = 1\nlocal = 7\n"
                         "[[tunnel]]\ndevice = \"e\"\nport = 2\nlocal = \"127.0.0.1:7\"\n"),
      "/etc/tether/tunnels.toml:6: local: the same local address as the tunnel at line 2 "
      "('d:1')");
  // The same port for TCP and UDP, or port 0 twice, is fine.
  EXPECT_NO_THROW(parse("server = \"tls://a\"\n[[tunnel]]\ndevice = \"d\"\nport = 1\nlocal = 7\n"
                        "[[tunnel]]\ndevice = \"d\"\nport = 1\nlocal = 7\nproto = \"udp\"\n"
                        "[[tunnel]]\ndevice = \"d\"\nport = 1\nlocal = 0\n"
                        "[[tunnel]]\ndevice = \"d\"\nport = 1\nlocal = 0\n"));
  EXPECT_EQ(
      tunnels_file_error("server = \"tls://a\"\n[[tunnel]]\nname = \"no spaces\"\ndevice = \"d\"\n"
                         "port = 1\nlocal = 7\n"),
      "/etc/tether/tunnels.toml:3: tunnel[0].name: mapping name 'no spaces' must be "
      "letters, digits, '.', '_' or '-', starting with a letter or digit");
}

TEST(TunnelsFile, LoadNamesAFileItCannotRead) {
  try {
    load_tunnels_file("/nonexistent/tunnels.toml");
    FAIL() << "loaded";
  } catch (const config_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "/nonexistent/tunnels.toml: cannot read the tunnels file: No such file or directory");
  }
}

}  // namespace
}  // namespace tether::client
