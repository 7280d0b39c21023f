#include "tether/server/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "tether/transport/dev_pki.hpp"

namespace tether::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string hex_a = to_hex(sha256("tt_token_a"));
const std::string hex_b = to_hex(sha256("tt_token_b"));

// A minimal valid config; tests append to it or replace parts of it.
std::string minimal() {
  return "cert = \"server.crt\"\n"
         "key = \"server.key\"\n"
         "\n"
         "[[credential]]\n"
         "name = \"laptop\"\n"
         "token_sha256 = \"" +
         hex_a +
         "\"\n"
         "allow = [\"dev-42:22\"]\n";
}

// `keys` (top-level) before the minimal config: below a [[...]] header they would belong to it.
std::string top(const std::string& keys) {
  return keys + minimal();
}

std::string config_load_error(const std::string& toml, const fs::path& source = "server.toml") {
  try {
    parse_server_config(toml, source);
  } catch (const config_error& e) {
    return e.what();
  }
  return "parsed";
}

TEST(Endpoint, Parses) {
  auto a = parse_endpoint("127.0.0.1:7443");
  ASSERT_TRUE(a.ok()) << a.message();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7443);
  EXPECT_EQ(a->text(), "127.0.0.1:7443");

  auto b = parse_endpoint("[::1]:0");
  ASSERT_TRUE(b.ok()) << b.message();
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 0);
  EXPECT_EQ(b->text(), "[::1]:0");

  auto c = parse_endpoint("tunnel.example.com:65535");
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(c->host, "tunnel.example.com");
  EXPECT_EQ(c->port, 65535);

  auto d = parse_endpoint("[::]:7443");
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_EQ(d->host, "::");
}

TEST(Endpoint, Errors) {
  auto msg = [](std::string_view t) {
    auto r = parse_endpoint(t);
    return r.ok() ? std::string("parsed") : r.message();
  };
  EXPECT_EQ(msg("127.0.0.1"), "'127.0.0.1': expected HOST:PORT");
  EXPECT_EQ(msg(":7443"), "':7443': missing host (use 0.0.0.0 or [::] for all)");
  EXPECT_EQ(msg("::1:7443"), "'::1:7443': write IPv6 addresses in brackets, like [::1]:7443");
  EXPECT_EQ(msg("[::1"), "'[::1': missing ']' after IPv6 address");
  EXPECT_EQ(msg("[::1]7443"), "'[::1]7443': expected [ADDRESS]:PORT");
  EXPECT_EQ(msg("[::1]"), "'[::1]': expected [ADDRESS]:PORT");
  EXPECT_EQ(msg("[127.0.0.1]:1"), "'[127.0.0.1]:1': brackets are only for IPv6 addresses");
  EXPECT_EQ(msg("[::g]:1"), "'[::g]:1': '::g' is not a host name or IP address");
  EXPECT_EQ(msg("bad host:1"), "'bad host:1': 'bad host' is not a host name or IP address");
  EXPECT_EQ(msg("h:"), "'h:': port '' is not a number");
  EXPECT_EQ(msg("h:x"), "'h:x': port 'x' is not a number");
  EXPECT_EQ(msg("h:-1"), "'h:-1': port '-1' is not a number");
  EXPECT_EQ(msg("h:65536"), "'h:65536': port 65536 out of range (0-65535)");
}

TEST(ServerConfig, MinimalGetsDefaults) {
  const auto cfg = parse_server_config(minimal(), "/etc/tether/server.toml");
  EXPECT_EQ(cfg.listen.host, "127.0.0.1");
  EXPECT_EQ(cfg.listen.port, 7443);
  EXPECT_EQ(cfg.cert, fs::path("/etc/tether/server.crt"));
  EXPECT_EQ(cfg.key, fs::path("/etc/tether/server.key"));
  EXPECT_EQ(cfg.connect_timeout, 5000ms);
  EXPECT_EQ(cfg.handshake_timeout, 10000ms);
  EXPECT_EQ(cfg.grace_period, 10000ms);
  EXPECT_EQ(cfg.keepalive, 15000ms);
  EXPECT_EQ(cfg.udp_idle_timeout, 60000ms);
  EXPECT_EQ(cfg.stream_window, 2u * 1024 * 1024);
  EXPECT_EQ(cfg.session_window, 16u * 1024 * 1024);
  EXPECT_EQ(cfg.max_streams_per_session, 10000u);
  EXPECT_EQ(cfg.limits.max_queued_bytes, 4u * 1024 * 1024);
  EXPECT_EQ(cfg.limits.max_pending_handshakes, 1024u);
  EXPECT_EQ(cfg.limits.max_pending_handshakes_per_source, 64u);
  EXPECT_EQ(cfg.limits.max_sessions_per_credential, 256u);
  EXPECT_EQ(cfg.limits.max_sessions_per_source, 256u);
  EXPECT_EQ(cfg.limits.max_streams_per_credential, 20000u);
  EXPECT_EQ(cfg.limits.max_streams, 0u);  // derived from the open-files limit at start
  EXPECT_EQ(cfg.limits.max_pending_opens_per_session, 256u);
  EXPECT_EQ(cfg.limits.max_auth_failures_per_source, 10u);
  EXPECT_EQ(cfg.limits.auth_failure_window, 60000ms);
  ASSERT_EQ(cfg.credentials.size(), 1u);
  EXPECT_EQ(cfg.credentials[0].name, "laptop");
  EXPECT_EQ(to_hex(cfg.credentials[0].token_sha256), hex_a);
  EXPECT_TRUE(token_matches("tt_token_a", cfg.credentials[0].token_sha256));
  EXPECT_TRUE(cfg.credentials[0].allow.allows("dev-42", 22, mux::protocol::tcp));
  EXPECT_FALSE(cfg.credentials[0].allow.allows("dev-42", 23, mux::protocol::tcp));
  EXPECT_TRUE(cfg.devices.empty());
}

TEST(ServerConfig, FullConfig) {
  const std::string toml =
      "listen = \"[::1]:0\"\n"
      "cert = \"/abs/server.crt\"\n"
      "key = \"keys/server.key\"\n"
      "connect_timeout_ms = 250\n"
      "stream_window = 262_144\n"
      "session_window = 1048576\n"
      "max_streams_per_session = 64\n"
      "handshake_timeout_ms = 3000\n"
      "grace_period_ms = 0\n"
      "keepalive_ms = 500\n"
      "udp_idle_timeout_ms = 1500\n"
      "\n"
      "[[credential]]\n"
      "name = \"laptop\"\n"
      "token_sha256 = \"" +
      hex_a +
      "\"\n"
      "allow = [\"dev-42:22\", \"dev-*:80\", \"*:*/udp\"]\n"
      "\n"
      "[[credential]]\n"
      "name = \"ci@build\"\n"
      "token_sha256 = \"" +
      hex_b +
      "\"\n"
      "allow = []\n"
      "\n"
      "[[device]]\n"
      "id = \"dev-42\"\n"
      "address = \"127.0.1.42\"\n"
      "\n"
      "[[device]]\n"
      "id = \"dev-6\"\n"
      "address = \"[::1]\"\n"
      "\n"
      "[[device]]\n"
      "id = \"link12345\"\n"
      "address = \"device-12345.internal\"\n";
  const auto cfg = parse_server_config(toml, "conf/server.toml");
  EXPECT_EQ(cfg.listen.text(), "[::1]:0");
  EXPECT_EQ(cfg.cert, fs::path("/abs/server.crt"));
  EXPECT_EQ(cfg.key, fs::path("conf/keys/server.key"));
  EXPECT_EQ(cfg.connect_timeout, 250ms);
  EXPECT_EQ(cfg.stream_window, 262144u);
  EXPECT_EQ(cfg.session_window, 1048576u);
  EXPECT_EQ(cfg.max_streams_per_session, 64u);
  EXPECT_EQ(cfg.handshake_timeout, 3000ms);
  EXPECT_EQ(cfg.grace_period, 0ms);
  EXPECT_EQ(cfg.keepalive, 500ms);
  EXPECT_EQ(cfg.udp_idle_timeout, 1500ms);
  ASSERT_EQ(cfg.credentials.size(), 2u);
  const acl& a = cfg.credentials[0].allow;
  EXPECT_TRUE(a.allows("dev-42", 22, mux::protocol::tcp));
  EXPECT_TRUE(a.allows("dev-7", 80, mux::protocol::tcp));
  EXPECT_TRUE(a.allows("x", 53, mux::protocol::udp));
  EXPECT_FALSE(a.allows("x", 53, mux::protocol::tcp));
  EXPECT_EQ(cfg.credentials[1].name, "ci@build");
  EXPECT_FALSE(cfg.credentials[1].allow.allows("dev-42", 22, mux::protocol::tcp));
  ASSERT_EQ(cfg.devices.size(), 3u);
  EXPECT_EQ(cfg.devices[0].id, "dev-42");
  EXPECT_EQ(cfg.devices[0].address, "127.0.1.42");
  EXPECT_EQ(cfg.devices[1].address, "::1");  // brackets dropped
  EXPECT_EQ(cfg.devices[2].address, "device-12345.internal");
}

TEST(ServerConfig, RelativePathsWithoutDirectoryStayRelative) {
  const auto cfg = parse_server_config(minimal(), "server.toml");
  EXPECT_EQ(cfg.cert, fs::path("server.crt"));
  EXPECT_EQ(cfg.key, fs::path("server.key"));
}

TEST(ServerConfig, SyntaxErrorsNameFileAndLine) {
  const std::string e = config_load_error(minimal() + "oops = \n");
  EXPECT_EQ(e.rfind("server.toml:8: ", 0), 0u) << e;
}

TEST(ServerConfig, UnknownKeysAreRejectedWithSuggestion) {
  EXPECT_EQ(config_load_error("lisen = \"127.0.0.1:1\"\n" + minimal()),
            "server.toml:1: lisen: unknown key (did you mean 'listen'?)");
  EXPECT_EQ(config_load_error(top("colour = 3\n")), "server.toml:1: colour: unknown key");
  EXPECT_EQ(config_load_error(minimal() + "keepalive_ms = 100\n"),
            "server.toml:8: credential[0].keepalive_ms: unknown key here; top-level keys go "
            "above the first [[...]] section");
  EXPECT_EQ(config_load_error(minimal() + "alow = [\"*\"]\n"),
            "server.toml:8: credential[0].alow: unknown key (did you mean 'allow'?)");
  EXPECT_EQ(config_load_error(minimal() + "[[device]]\nid = \"d\"\naddress = \"h\"\nport = 22\n"),
            "server.toml:11: device[0].port: unknown key");
  EXPECT_EQ(config_load_error(minimal() + "[tls]\nmin = 1\n"), "server.toml:8: tls: unknown key");
}

TEST(ServerConfig, MissingRequiredKeys) {
  EXPECT_EQ(config_load_error("key = \"k\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"" + hex_a +
                              "\"\nallow=[]\n"),
            "server.toml:1: cert: missing (the server's PEM certificate chain, like "
            "\"server.crt\")");
  EXPECT_EQ(config_load_error("cert = \"c\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"" + hex_a +
                              "\"\nallow=[]\n"),
            "server.toml:1: key: missing (the server's PEM private key, like \"server.key\")");
  EXPECT_EQ(config_load_error("cert = \"\"\nkey = \"k\"\n"), "server.toml:1: cert: empty path");
  EXPECT_EQ(config_load_error("cert = \"c\"\nkey = \"k\"\n"),
            "server.toml: credential: no [[credential]] sections: nobody could connect (add one "
            "with name, token_sha256 and allow)");
  EXPECT_EQ(
      config_load_error("cert = \"c\"\nkey = \"k\"\n[[credential]]\nname = \"a\"\nallow = []\n"),
      "server.toml:3: credential[0].token_sha256: missing (the SHA-256 of the token as 64 "
      "hex digits)");
  EXPECT_EQ(config_load_error("cert = \"c\"\nkey = \"k\"\n[[credential]]\ntoken_sha256 = \"" +
                              hex_a + "\"\nallow = []\n"),
            "server.toml:3: credential[0].name: missing (a name for logs, like \"laptop\")");
  EXPECT_EQ(config_load_error(
                "cert = \"c\"\nkey = \"k\"\n[[credential]]\nname = \"a\"\ntoken_sha256 = \"" +
                hex_a + "\"\n"),
            "server.toml:3: credential[0].allow: missing (a list of patterns like "
            "[\"dev-42:22\"])");
  EXPECT_EQ(config_load_error(minimal() + "[[device]]\nid = \"d\"\n"),
            "server.toml:8: device[0].address: missing (the host name or IP address the server "
            "dials)");
  EXPECT_EQ(config_load_error(minimal() + "[[device]]\naddress = \"h\"\n"),
            "server.toml:8: device[0].id: missing (the device id, like \"dev-42\")");
}

TEST(ServerConfig, WrongTypes) {
  EXPECT_EQ(config_load_error("listen = 7443\n" + minimal()),
            "server.toml:1: listen: expected a string, got an integer");
  EXPECT_EQ(config_load_error(top("keepalive_ms = \"15s\"\n")),
            "server.toml:1: keepalive_ms: expected an integer, got a string");
  EXPECT_EQ(config_load_error(top("stream_window = 1.5e6\n")),
            "server.toml:1: stream_window: expected an integer, got a floating-point number");
  EXPECT_EQ(config_load_error("credential = 1\n" + minimal().substr(0, minimal().find('['))),
            "server.toml:1: credential: expected [[credential]] sections (an array of tables)");
  EXPECT_EQ(config_load_error("cert=\"c\"\nkey=\"k\"\n[credential]\nname=\"a\"\n"),
            "server.toml:3: credential: expected [[credential]] sections (an array of tables)");
  EXPECT_EQ(config_load_error("cert=\"c\"\nkey=\"k\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"" +
                              hex_a + "\"\nallow=\"*\"\n"),
            "server.toml:6: credential[0].allow: expected an array, got a string");
  EXPECT_EQ(config_load_error("cert=\"c\"\nkey=\"k\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"" +
                              hex_a + "\"\nallow=[\"a:1\", 2]\n"),
            "server.toml:6: credential[0].allow[1]: expected a string, got an integer");
}

TEST(ServerConfig, BadValues) {
  EXPECT_EQ(config_load_error("listen = \"localhost\"\n" + minimal()),
            "server.toml:1: listen: 'localhost': expected HOST:PORT");
  EXPECT_EQ(
      config_load_error("cert=\"c\"\nkey=\"k\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"abc\"\n"
                        "allow=[]\n"),
      "server.toml:5: credential[0].token_sha256: expected 64 hex digits (the SHA-256 of "
      "the token, never the token itself), got 3 characters");
  EXPECT_EQ(
      config_load_error("cert=\"c\"\nkey=\"k\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"tt_"
                        "secret\"\nallow=[]\n"),
      "server.toml:5: credential[0].token_sha256: expected 64 hex digits (the SHA-256 of "
      "the token, never the token itself), got 9 characters that look like a token");
  EXPECT_EQ(config_load_error("cert=\"c\"\nkey=\"k\"\n[[credential]]\nname=\"a\"\ntoken_sha256=\"" +
                              hex_a + "\"\nallow=[\"dev-42:22\", \"dev-42\"]\n"),
            "server.toml:6: credential[0].allow[1]: ACL pattern 'dev-42': expected DEVICE:PORT, "
            "e.g. dev-42:22, dev-*:8000-8099 or *:*");
  EXPECT_EQ(config_load_error("cert=\"c\"\nkey=\"k\"\n[[credential]]\nname=\"my laptop\"\n"),
            "server.toml:4: credential[0].name: 'my laptop' is not a valid name (1-64 of A-Z a-z "
            "0-9 . _ - @)");
  EXPECT_EQ(config_load_error(minimal() + "[[device]]\nid = \"dev 42\"\naddress = \"h\"\n"),
            "server.toml:9: device[0].id: 'dev 42' is not a valid device id (1-64 of A-Z a-z 0-9 "
            ". _ -)");
  EXPECT_EQ(config_load_error(minimal() + "[[device]]\nid = \"d\"\naddress = \"10.0.0.1:22\"\n"),
            "server.toml:10: device[0].address: '10.0.0.1:22' is not a host name or IP address "
            "(no port: the stream gives it)");
}

TEST(ServerConfig, NumericBounds) {
  EXPECT_EQ(config_load_error(top("stream_window = 65535\n")),
            "server.toml:1: stream_window: 65535 is below the minimum 65536");
  EXPECT_EQ(config_load_error(top("stream_window = 1073741825\n")),
            "server.toml:1: stream_window: 1073741825 is above the maximum 1073741824");
  EXPECT_EQ(config_load_error(top("session_window = 1048576\n")),
            "server.toml:1: session_window: 1048576 is smaller than stream_window (2097152); one "
            "stream could never use its window");
  EXPECT_EQ(config_load_error(top("stream_window = 33554432\n")),
            "server.toml:1: session_window: 16777216 is smaller than stream_window (33554432); "
            "one stream could never use its window");
  EXPECT_EQ(config_load_error(top("max_streams_per_session = 0\n")),
            "server.toml:1: max_streams_per_session: 0 is below the minimum 1");
  EXPECT_EQ(config_load_error(top("max_streams_per_session = 1000001\n")),
            "server.toml:1: max_streams_per_session: 1000001 is above the maximum 1000000");
  EXPECT_EQ(config_load_error(top("connect_timeout_ms = 0\n")),
            "server.toml:1: connect_timeout_ms: 0 is below the minimum 1");
  EXPECT_EQ(config_load_error(top("handshake_timeout_ms = -5\n")),
            "server.toml:1: handshake_timeout_ms: -5 is below the minimum 1");
  EXPECT_EQ(config_load_error(top("keepalive_ms = 99\n")),
            "server.toml:1: keepalive_ms: 99 is below the minimum 100");
  EXPECT_EQ(config_load_error(top("udp_idle_timeout_ms = 0\n")),
            "server.toml:1: udp_idle_timeout_ms: 0 is below the minimum 1");
  EXPECT_EQ(config_load_error(top("grace_period_ms = 86400001\n")),
            "server.toml:1: grace_period_ms: 86400001 is above the maximum 86400000");
  EXPECT_EQ(parse_server_config(top("stream_window = 1073741824\nsession_window = 1073741824\n"),
                                "s.toml")
                .session_window,
            1073741824u);
}

TEST(ServerConfig, Workers) {
  EXPECT_EQ(parse_server_config(minimal(), "s.toml").workers, 0u);  // one per CPU
  EXPECT_EQ(parse_server_config(top("workers = 8\n"), "s.toml").workers, 8u);
  EXPECT_EQ(parse_server_config(top("workers = 1024\n"), "s.toml").workers, 1024u);
  EXPECT_EQ(config_load_error(top("workers = 1025\n")),
            "server.toml:1: workers: 1025 is above the maximum 1024");
  EXPECT_EQ(config_load_error(top("workers = -1\n")),
            "server.toml:1: workers: -1 is below the minimum 0");
  EXPECT_EQ(config_load_error(top("workers = \"4\"\n")),
            "server.toml:1: workers: expected an integer, got a string");
}

TEST(ServerConfig, Limits) {
  const auto cfg = parse_server_config(top("max_queued_bytes = 65536\n"
                                           "max_pending_handshakes = 2000\n"
                                           "max_pending_handshakes_per_source = 8\n"
                                           "max_sessions_per_credential = 3\n"
                                           "max_sessions_per_source = 4\n"
                                           "max_streams_per_credential = 500\n"
                                           "max_streams = 12345\n"
                                           "max_pending_opens_per_session = 16\n"
                                           "max_auth_failures_per_source = 5\n"
                                           "auth_failure_window_ms = 1500\n"),
                                       "s.toml");
  const auto& l = cfg.limits;
  EXPECT_EQ(l.max_queued_bytes, 65536u);
  EXPECT_EQ(l.max_pending_handshakes, 2000u);
  EXPECT_EQ(l.max_pending_handshakes_per_source, 8u);
  EXPECT_EQ(l.max_sessions_per_credential, 3u);
  EXPECT_EQ(l.max_sessions_per_source, 4u);
  EXPECT_EQ(l.max_streams_per_credential, 500u);
  EXPECT_EQ(l.max_streams, 12345u);
  EXPECT_EQ(l.max_pending_opens_per_session, 16u);
  EXPECT_EQ(l.max_auth_failures_per_source, 5u);
  EXPECT_EQ(l.auth_failure_window, 1500ms);
}

TEST(ServerConfig, LimitsAtTheirBounds) {
  const auto low = parse_server_config(top("max_queued_bytes = 65536\n"
                                           "max_pending_handshakes = 1\n"
                                           "max_pending_handshakes_per_source = 1\n"
                                           "max_sessions_per_credential = 1\n"
                                           "max_sessions_per_source = 1\n"
                                           "max_streams_per_credential = 1\n"
                                           "max_streams = 0\n"
                                           "max_pending_opens_per_session = 1\n"
                                           "max_auth_failures_per_source = 1\n"
                                           "auth_failure_window_ms = 1\n"),
                                       "s.toml");
  EXPECT_EQ(low.limits.max_queued_bytes, 65536u);
  EXPECT_EQ(low.limits.max_pending_handshakes, 1u);
  EXPECT_EQ(low.limits.max_streams, 0u);
  EXPECT_EQ(low.limits.auth_failure_window, 1ms);

  const auto high = parse_server_config(top("max_queued_bytes = 1073741824\n"
                                            "max_pending_handshakes = 1000000\n"
                                            "max_pending_handshakes_per_source = 1000000\n"
                                            "max_sessions_per_credential = 1000000\n"
                                            "max_sessions_per_source = 1000000\n"
                                            "max_streams_per_credential = 1000000\n"
                                            "max_streams = 1000000\n"
                                            "max_pending_opens_per_session = 1000000\n"
                                            "max_auth_failures_per_source = 1000000\n"
                                            "auth_failure_window_ms = 86400000\n"),
                                        "s.toml");
  EXPECT_EQ(high.limits.max_queued_bytes, 1073741824u);
  EXPECT_EQ(high.limits.max_pending_handshakes, 1000000u);
  EXPECT_EQ(high.limits.max_pending_handshakes_per_source, 1000000u);
  EXPECT_EQ(high.limits.max_sessions_per_credential, 1000000u);
  EXPECT_EQ(high.limits.max_sessions_per_source, 1000000u);
  EXPECT_EQ(high.limits.max_streams_per_credential, 1000000u);
  EXPECT_EQ(high.limits.max_streams, 1000000u);
  EXPECT_EQ(high.limits.max_pending_opens_per_session, 1000000u);
  EXPECT_EQ(high.limits.max_auth_failures_per_source, 1000000u);
  EXPECT_EQ(high.limits.auth_failure_window, 86400000ms);
}

TEST(ServerConfig, LimitBounds) {
  // Every count takes 1 to 1000000, except max_streams, where 0 means "derive it".
  for (const char* key :
       {"max_pending_handshakes", "max_pending_handshakes_per_source",
        "max_sessions_per_credential", "max_sessions_per_source", "max_streams_per_credential",
        "max_pending_opens_per_session", "max_auth_failures_per_source"}) {
    const std::string k = key;
    EXPECT_EQ(config_load_error(top(k + " = 0\n")),
              "server.toml:1: " + k + ": 0 is below the minimum 1");
    EXPECT_EQ(config_load_error(top(k + " = -1\n")),
              "server.toml:1: " + k + ": -1 is below the minimum 1");
    EXPECT_EQ(config_load_error(top(k + " = 1000001\n")),
              "server.toml:1: " + k + ": 1000001 is above the maximum 1000000");
    EXPECT_EQ(config_load_error(top(k + " = \"10\"\n")),
              "server.toml:1: " + k + ": expected an integer, got a string");
  }
  EXPECT_EQ(config_load_error(top("max_streams = -1\n")),
            "server.toml:1: max_streams: -1 is below the minimum 0");
  EXPECT_EQ(config_load_error(top("max_streams = 1000001\n")),
            "server.toml:1: max_streams: 1000001 is above the maximum 1000000");
  EXPECT_EQ(config_load_error(top("max_queued_bytes = 65535\n")),
            "server.toml:1: max_queued_bytes: 65535 is below the minimum 65536");
  EXPECT_EQ(config_load_error(top("max_queued_bytes = 1073741825\n")),
            "server.toml:1: max_queued_bytes: 1073741825 is above the maximum 1073741824");
  EXPECT_EQ(config_load_error(top("max_queued_bytes = 4.5e6\n")),
            "server.toml:1: max_queued_bytes: expected an integer, got a floating-point number");
  EXPECT_EQ(config_load_error(top("auth_failure_window_ms = 0\n")),
            "server.toml:1: auth_failure_window_ms: 0 is below the minimum 1");
  EXPECT_EQ(config_load_error(top("auth_failure_window_ms = 86400001\n")),
            "server.toml:1: auth_failure_window_ms: 86400001 is above the maximum 86400000");
  // The line is the value's own.
  EXPECT_EQ(
      config_load_error(top("max_streams = 10\nkeepalive_ms = 500\nmax_sessions_per_source = 0\n")),
      "server.toml:3: max_sessions_per_source: 0 is below the minimum 1");
}

TEST(ServerConfig, LimitKeysAreCheckedLikeTheOthers) {
  EXPECT_EQ(config_load_error(top("max_session_per_source = 4\n")),
            "server.toml:1: max_session_per_source: unknown key (did you mean "
            "'max_sessions_per_source'?)");
  EXPECT_EQ(config_load_error(top("auth_failures_window_ms = 1000\n")),
            "server.toml:1: auth_failures_window_ms: unknown key (did you mean "
            "'auth_failure_window_ms'?)");
  EXPECT_EQ(config_load_error(minimal() + "max_streams = 100\n"),
            "server.toml:8: credential[0].max_streams: unknown key here; top-level keys go "
            "above the first [[...]] section");
}

TEST(ServerConfig, Duplicates) {
  const std::string second_cred =
      "[[credential]]\nname = \"laptop\"\ntoken_sha256 = \"" + hex_b + "\"\nallow = []\n";
  EXPECT_EQ(config_load_error(minimal() + second_cred),
            "server.toml:9: credential[1].name: duplicate credential name 'laptop' (first at "
            "line 4)");
  const std::string same_token =
      "[[credential]]\nname = \"other\"\ntoken_sha256 = \"" + hex_a + "\"\nallow = []\n";
  EXPECT_EQ(config_load_error(minimal() + same_token),
            "server.toml:10: credential[1].token_sha256: the same token hash as credential "
            "'laptop': each credential needs its own token");
  const std::string devices =
      "[[device]]\nid = \"dev-42\"\naddress = \"127.0.1.42\"\n"
      "[[device]]\nid = \"dev-42\"\naddress = \"127.0.1.43\"\n";
  EXPECT_EQ(config_load_error(minimal() + devices),
            "server.toml:12: device[1].id: duplicate device id 'dev-42' (first at line 8)");
  // TOML itself rejects a key given twice.
  const std::string e = config_load_error("cert = \"a\"\ncert = \"b\"\n");
  EXPECT_EQ(e.rfind("server.toml:2: ", 0), 0u) << e;
}

TEST(ServerConfig, EmptyArraysMeanNoSections) {
  EXPECT_EQ(config_load_error("credential = []\ncert = \"c\"\nkey = \"k\"\n"),
            "server.toml: credential: no [[credential]] sections: nobody could connect (add one "
            "with name, token_sha256 and allow)");
  EXPECT_TRUE(parse_server_config(top("device = []\n"), "s.toml").devices.empty());
}

TEST(ServerConfig, UnnamedSourceStillGivesContext) {
  EXPECT_EQ(config_load_error("listen = 1\n", ""),
            "<config>:1: listen: expected a string, got an integer");
}

class ServerConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tether-config-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ / name, std::ios::binary) << content;
  }
  // A certificate and its key as server.crt and server.key; another pair in `other` if given.
  void write_cert_and_key(const char* other = nullptr) {
    const auto a = transport::ensure_dev_pki(dir_ / "pki-a");
    fs::copy_file(a.server_cert, dir_ / "server.crt");
    fs::copy_file(a.server_key, dir_ / "server.key");
    if (other == nullptr) return;
    const auto b = transport::ensure_dev_pki(dir_ / "pki-b");
    fs::copy_file(b.server_key, dir_ / (std::string(other) + ".key"));
  }
  // The message of the config_error loading server.toml throws.
  std::string refusal() {
    try {
      load_server_config(dir_ / "server.toml");
    } catch (const config_error& e) {
      return e.what();
    }
    return "no exception";
  }
  std::string in(const std::string& name) const { return "'" + (dir_ / name).string() + "'"; }
  fs::path dir_;
};

TEST_F(ServerConfigFile, LoadsAndResolvesPathsAgainstTheFilesDirectory) {
  write("server.toml", minimal());
  write_cert_and_key();
  const auto cfg = load_server_config(dir_ / "server.toml");
  EXPECT_EQ(cfg.cert, dir_ / "server.crt");
  EXPECT_EQ(cfg.key, dir_ / "server.key");
  EXPECT_EQ(cfg.credentials.size(), 1u);
}

TEST_F(ServerConfigFile, MissingConfigFile) {
  const fs::path p = dir_ / "none.toml";
  try {
    load_server_config(p);
    FAIL() << "no exception";
  } catch (const config_error& e) {
    EXPECT_EQ(std::string(e.what()), p.string() + ": cannot read the config file: no such file");
  }
}

TEST_F(ServerConfigFile, MissingCertOrKeyFile) {
  write("server.toml", minimal());
  write("server.crt", "pem");
  try {
    load_server_config(dir_ / "server.toml");
    FAIL() << "no exception";
  } catch (const config_error& e) {
    EXPECT_EQ(std::string(e.what()), (dir_ / "server.toml").string() + ": key: '" +
                                         (dir_ / "server.key").string() +
                                         "' does not exist or is not a file");
  }
}

// Each a config error naming the file and the setting, in words, not OpenSSL's.
TEST_F(ServerConfigFile, ACertificateGivenAsTheKey) {
  write_cert_and_key();
  write("server.toml", "cert = \"server.crt\"\n" + std::string("key = \"server.crt\"\n") +
                           minimal().substr(minimal().find("\n[[")));
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": key: " + in("server.crt") +
                           " is a certificate, not a private key");
}

TEST_F(ServerConfigFile, AKeyGivenAsTheCertificate) {
  write_cert_and_key();
  write("server.toml", "cert = \"server.key\"\n" + std::string("key = \"server.key\"\n") +
                           minimal().substr(minimal().find("\n[[")));
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": cert: " + in("server.key") +
                           " is a private key, not a certificate");
}

TEST_F(ServerConfigFile, AKeyOfAnotherCertificate) {
  write_cert_and_key("other");
  write("server.toml", "cert = \"server.crt\"\n" + std::string("key = \"other.key\"\n") +
                           minimal().substr(minimal().find("\n[[")));
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": key: " + in("other.key") +
                           " does not match the certificate in 'cert' (" + in("server.crt") + ")");
}

TEST_F(ServerConfigFile, FilesThatAreNotPem) {
  write_cert_and_key();
  write("server.toml", minimal());
  write("server.key", "not a key");
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": key: " + in("server.key") +
                           " holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
  write("server.crt", "not a certificate");
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": cert: " + in("server.crt") +
                           " holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
}

TEST_F(ServerConfigFile, AKeyTheServerCannotRead) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  write_cert_and_key();
  write("server.toml", minimal());
  fs::permissions(dir_ / "server.key", fs::perms::none);
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": key: " + in("server.key") +
                           " cannot be read: Permission denied");
}

TEST_F(ServerConfigFile, AKeyWithAPassphraseIsRefusedNotPromptedFor) {
  write_cert_and_key();
  write("server.toml", minimal());
  write("server.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBAA==\n-----END ENCRYPTED PRIVATE KEY-----\n");
  EXPECT_EQ(refusal(), (dir_ / "server.toml").string() + ": key: " + in("server.key") +
                           " is encrypted with a passphrase; give the key unencrypted");
}

TEST_F(ServerConfigFile, ErrorsNameThePath) {
  write("server.toml", "listen = 1\n");
  try {
    load_server_config(dir_ / "server.toml");
    FAIL() << "no exception";
  } catch (const config_error& e) {
    EXPECT_EQ(std::string(e.what()),
              (dir_ / "server.toml").string() + ":1: listen: expected a string, got an integer");
  }
}

}  // namespace
}  // namespace tether::server
