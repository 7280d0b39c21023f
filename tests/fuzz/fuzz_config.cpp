// Fuzzes the server's config parser on arbitrary TOML text. config_error is the only
// exception it may throw (anything else escaping is a bug, and aborts the run). A config
// that parses must hold what docs/CONFIG.md promises: values within their bounds, at least
// one credential, unique names, token hashes and device ids. The same input is also tried
// as a listen address (host:port), whose text() must parse back to itself.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "tether/server/config.hpp"
#include "tether/transport/host.hpp"

namespace {

using namespace tether;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_config: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

void check_config(const server::server_config& c) {
  check(transport::is_valid_host(c.listen.host), "listen host is not a host");
  check(!c.cert.empty() && !c.key.empty(), "empty cert or key path");
  check(c.stream_window >= server::min_window && c.stream_window <= server::max_window,
        "stream_window out of bounds");
  check(c.session_window >= c.stream_window && c.session_window <= server::max_window,
        "session_window out of bounds");
  check(c.max_streams_per_session >= 1 && c.max_streams_per_session <= server::max_streams_limit,
        "max_streams_per_session out of bounds");
  check(c.connect_timeout.count() >= 1 && c.handshake_timeout.count() >= 1 &&
            c.grace_period.count() >= 0 && c.keepalive.count() >= 100,
        "a timeout below its minimum");
  check(!c.credentials.empty(), "a config without credentials");
  std::set<std::string> names;
  std::set<server::sha256_digest> tokens;
  for (const auto& cred : c.credentials) {
    check(names.insert(cred.name).second, "duplicate credential name");
    check(tokens.insert(cred.token_sha256).second, "duplicate token hash");
    for (const auto& rule : cred.allow.rules())
      check(rule.port_min >= 1 && rule.port_min <= rule.port_max, "ACL port range inverted");
    // Matching must terminate and not crash, whatever the patterns.
    (void)cred.allow.allows("dev-42", 22, mux::protocol::tcp);
    (void)cred.allow.allows(std::string(64, 'a'), 65535, mux::protocol::udp);
  }
  std::set<std::string> ids;
  for (const auto& d : c.devices) {
    check(server::is_valid_device_id(d.id), "invalid device id accepted");
    check(ids.insert(d.id).second, "duplicate device id");
    // An agent device is reached through its agent's session and has no address.
    if (d.agent)
      check(d.address.empty(), "agent device with an address");
    else
      check(transport::is_valid_host(d.address), "device address is not a host");
  }
}

void check_endpoint(std::string_view text) {
  const auto ep = server::parse_endpoint(text);
  if (!ep) return;
  const auto again = server::parse_endpoint(ep->text());
  check(again && again->host == ep->host && again->port == ep->port,
        "an endpoint's text() does not parse back to it");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    check_config(server::parse_server_config(text, "conf/server.toml"));
  } catch (const server::config_error& e) {
    check(std::string_view(e.what()).starts_with("conf/server.toml"),
          "a config error that does not name the file");
  }
  check_endpoint(text);
  return 0;
}
