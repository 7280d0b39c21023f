#include "tether/server/config.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>

#include "api_config.hpp"
#include "tether/toml_check.hpp"
#include "tether/transport/host.hpp"
#include "tether/transport/tls.hpp"

namespace tether::server {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t max_config_size = 4 * 1024 * 1024;  // far above any real config
constexpr std::int64_t max_timeout_ms = 24LL * 3600 * 1000;

constexpr std::array<std::string_view, 29> top_level_keys{"listen",
                                                          "cert",
                                                          "key",
                                                          "connect_timeout_ms",
                                                          "stream_window",
                                                          "session_window",
                                                          "max_stream_window",
                                                          "max_streams_per_session",
                                                          "workers",
                                                          "handshake_timeout_ms",
                                                          "grace_period_ms",
                                                          "keepalive_ms",
                                                          "udp_idle_timeout_ms",
                                                          "max_queued_bytes",
                                                          "max_pending_handshakes",
                                                          "max_pending_handshakes_per_source",
                                                          "max_sessions_per_credential",
                                                          "max_sessions_per_source",
                                                          "max_streams_per_credential",
                                                          "max_streams",
                                                          "max_pending_opens_per_session",
                                                          "max_auth_failures_per_source",
                                                          "auth_failure_window_ms",
                                                          "credential",
                                                          "device",
                                                          "api_listen",  // api_config.hpp
                                                          "state_dir",
                                                          "api",
                                                          "api_key"};


bool is_valid_credential_name(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_' || c == '@';
  });
}

// agent_for = "dev-77": the credential of that device's agent, which opens no streams.
std::string parse_agent_for(const toml_checker& c, const toml::table& t, const std::string& at) {
  const std::string& id = *c.string_of(*t.get("agent_for"), at + ".agent_for");
  if (!is_valid_device_id(id))
    c.fail(t.get("agent_for"), at + ".agent_for",
           "'" + id + "' is not a valid device id (1-64 of A-Z a-z 0-9 . _ -)");
  if (t.contains("allow"))
    c.fail(t.get("allow"), at + ".allow",
           "an agent credential (agent_for) opens no streams: give it no allow list");
  return id;
}

// `api_key`: an [[api_key]] table, which may also have see_sessions.
credential parse_credential(const toml_checker& c, const toml::table& t, const std::string& at,
                            bool api_key = false) {
  static constexpr std::array<std::string_view, 5> known{"name", "token_sha256", "allow",
                                                         "agent_for", "see_sessions"};
  c.only_known_keys(t, at + ".", known, top_level_keys);

  credential cred;
  if (const toml::node* n = t.get("see_sessions")) {
    if (!api_key)
      c.fail(n, at + ".see_sessions",
             "only an [[api_key]] has see_sessions (it lets the HTTP API list live sessions)");
    cred.see_sessions = c.boolean(t, "see_sessions", at + ".see_sessions", false);
  }
  cred.name = c.require_string(t, "name", at + ".name", "a name for logs, like \"laptop\"");
  if (!is_valid_credential_name(cred.name)) {
    c.fail(t.get("name"), at + ".name",
           "'" + cred.name + "' is not a valid name (1-64 of A-Z a-z 0-9 . _ - @)");
  }

  const std::string hex_key = at + ".token_sha256";
  const std::string& hex =
      c.require_string(t, "token_sha256", hex_key, "the SHA-256 of the token as 64 hex digits");
  auto digest = parse_sha256_hex(hex);
  if (!digest) {
    c.fail(t.get("token_sha256"), hex_key,
           "expected 64 hex digits (the SHA-256 of the token, never the token itself), got " +
               std::to_string(hex.size()) + " characters" +
               (hex.rfind("tt_", 0) == 0 ? " that look like a token" : ""));
  }
  cred.token_sha256 = *digest;
  if (t.contains("agent_for")) {
    cred.agent_for = parse_agent_for(c, t, at);
    return cred;
  }

  const std::string allow_key = at + ".allow";
  const toml::node* allow = t.get("allow");
  if (!allow) c.fail(&t, allow_key, "missing (a list of patterns like [\"dev-42:22\"])");
  const toml::array* arr = allow->as_array();
  if (!arr)
    c.fail(allow, allow_key, std::string("expected an array, got ") + toml_type_name(allow->type()));
  std::vector<acl_rule> rules;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const toml::node& el = *arr->get(i);
    const std::string el_key = allow_key + "[" + std::to_string(i) + "]";
    auto rule = parse_acl_rule(*c.string_of(el, el_key));
    if (!rule) c.fail(&el, el_key, rule.message());
    rules.push_back(std::move(rule).value());
  }
  cred.allow = acl(std::move(rules));
  return cred;
}

device parse_device(const toml_checker& c, const toml::table& t, const std::string& at) {
  static constexpr std::array<std::string_view, 3> known{"id", "address", "agent"};
  c.only_known_keys(t, at + ".", known, top_level_keys);

  device d;
  d.id = c.require_string(t, "id", at + ".id", "the device id, like \"dev-42\"");
  if (!is_valid_device_id(d.id)) {
    c.fail(t.get("id"), at + ".id",
           "'" + d.id + "' is not a valid device id (1-64 of A-Z a-z 0-9 . _ -)");
  }
  d.agent = c.boolean(t, "agent", at + ".agent", false);
  if (d.agent) {
    if (t.contains("address"))
      c.fail(t.get("address"), at + ".address",
             "an agent device (agent = true) is reached through its agent: give no address");
    return d;
  }
  d.address = c.require_string(t, "address", at + ".address",
                             "the host name or IP address the server dials");
  std::string_view addr = d.address;
  if (addr.size() >= 2 && addr.front() == '[' && addr.back() == ']') {
    addr = addr.substr(1, addr.size() - 2);  // accept [v6] as well as bare v6
  }
  if (!transport::is_valid_host(addr)) {
    c.fail(t.get("address"), at + ".address",
           "'" + d.address + "' is not a host name or IP address (no port: the stream gives it)");
  }
  d.address = std::string(addr);
  return d;
}

// Each agent credential names an agent device: a token can only ever speak for the
// device it is bound to, and that device must expect an agent.
template <typename Tables>
void check_agent_credentials(const toml_checker& c, const server_config& cfg,
                             const Tables& tables) {
  for (std::size_t i = 0; i < cfg.credentials.size(); ++i) {
    const auto& id = cfg.credentials[i].agent_for;
    if (id.empty()) continue;
    const auto dev = std::find_if(cfg.devices.begin(), cfg.devices.end(),
                                  [&](const device& d) { return d.id == id; });
    const std::string at = "credential[" + std::to_string(i) + "].agent_for";
    if (dev == cfg.devices.end())
      c.fail(tables[i]->get("agent_for"), at, "no [[device]] with id '" + id + "'");
    if (!dev->agent)
      c.fail(tables[i]->get("agent_for"), at,
             "device '" + id + "' is dialed at its address; add agent = true to it (and "
             "remove the address) to reach it through an agent");
  }
}

}  // namespace

std::string endpoint::text() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

result<endpoint> parse_endpoint(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return error{quoted + ": missing ']' after IPv6 address"};
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return error{quoted + ": expected [ADDRESS]:PORT"};
    }
    port = text.substr(close + 2);
    if (host.find(':') == std::string_view::npos) {
      return error{quoted + ": brackets are only for IPv6 addresses"};
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return error{quoted + ": expected HOST:PORT"};
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return error{quoted + ": write IPv6 addresses in brackets, like [::1]:7443"};
    }
  }
  if (host.empty()) return error{quoted + ": missing host (use 0.0.0.0 or [::] for all)"};
  if (!transport::is_valid_host(host)) {
    return error{quoted + ": '" + std::string(host) + "' is not a host name or IP address"};
  }
  if (port.empty() ||
      !std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return error{quoted + ": port '" + std::string(port) + "' is not a number"};
  }
  unsigned long p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc{} || p > 65535) {
    return error{quoted + ": port " + std::string(port) + " out of range (0-65535)"};
  }
  return endpoint{std::string(host), static_cast<std::uint16_t>(p)};
}

server_config parse_server_config(std::string_view toml_text, const fs::path& source) {
  const toml_checker c(source);
  const toml::table root = c.parse(toml_text);

  c.only_known_keys(root, "", top_level_keys);

  server_config cfg;

  if (const toml::node* n = root.get("listen")) {
    auto ep = parse_endpoint(*c.string_of(*n, "listen"));
    if (!ep) c.fail(n, "listen", ep.message());
    cfg.listen = std::move(ep).value();
  }

  auto path_of = [&](std::string_view name, std::string_view hint) {
    const std::string key(name);
    const std::string& p = c.require_string(root, name, key, hint);
    if (p.empty()) c.fail(root.get(name), key, "empty path");
    return c.resolve(p);
  };
  cfg.cert = path_of("cert", "the server's PEM certificate chain, like \"server.crt\"");
  cfg.key = path_of("key", "the server's PEM private key, like \"server.key\"");

  using ms = std::chrono::milliseconds;
  cfg.connect_timeout =
      ms(c.integer(root, "connect_timeout_ms", cfg.connect_timeout.count(), 1, max_timeout_ms));
  cfg.handshake_timeout =
      ms(c.integer(root, "handshake_timeout_ms", cfg.handshake_timeout.count(), 1, max_timeout_ms));
  cfg.grace_period =
      ms(c.integer(root, "grace_period_ms", cfg.grace_period.count(), 0, max_timeout_ms));
  cfg.keepalive = ms(c.integer(root, "keepalive_ms", cfg.keepalive.count(), 100, max_timeout_ms));
  cfg.udp_idle_timeout =
      ms(c.integer(root, "udp_idle_timeout_ms", cfg.udp_idle_timeout.count(), 1, max_timeout_ms));
  cfg.stream_window = static_cast<std::uint32_t>(
      c.integer(root, "stream_window", cfg.stream_window, min_window, max_window));
  cfg.session_window = static_cast<std::uint32_t>(
      c.integer(root, "session_window", cfg.session_window, min_window, max_window));
  if (cfg.session_window < cfg.stream_window) {
    c.fail(root.get("session_window") ? root.get("session_window") : root.get("stream_window"),
           "session_window",
           std::to_string(cfg.session_window) + " is smaller than stream_window (" +
               std::to_string(cfg.stream_window) + "); one stream could never use its window");
  }
  cfg.max_stream_window = std::max(cfg.max_stream_window, cfg.stream_window);
  cfg.max_stream_window = static_cast<std::uint32_t>(
      c.integer(root, "max_stream_window", cfg.max_stream_window, min_window, max_window));
  if (cfg.max_stream_window < cfg.stream_window) {
    c.fail(root.get("max_stream_window"), "max_stream_window",
           std::to_string(cfg.max_stream_window) + " is smaller than stream_window (" +
               std::to_string(cfg.stream_window) + "); make them equal to keep windows fixed");
  }
  cfg.max_streams_per_session = static_cast<std::uint32_t>(c.integer(
      root, "max_streams_per_session", cfg.max_streams_per_session, 1, max_streams_limit));
  cfg.workers = static_cast<std::uint32_t>(c.integer(root, "workers", cfg.workers, 0, max_workers));

  auto& l = cfg.limits;
  auto count = [&](std::string_view name, std::uint32_t& field, std::int64_t lowest) {
    field = static_cast<std::uint32_t>(c.integer(root, name, field, lowest, max_streams_limit));
  };
  l.max_queued_bytes = static_cast<std::size_t>(
      c.integer(root, "max_queued_bytes", static_cast<std::int64_t>(l.max_queued_bytes), min_window,
                max_window));
  count("max_pending_handshakes", l.max_pending_handshakes, 1);
  count("max_pending_handshakes_per_source", l.max_pending_handshakes_per_source, 1);
  count("max_sessions_per_credential", l.max_sessions_per_credential, 1);
  count("max_sessions_per_source", l.max_sessions_per_source, 1);
  count("max_streams_per_credential", l.max_streams_per_credential, 1);
  count("max_streams", l.max_streams, 0);
  count("max_pending_opens_per_session", l.max_pending_opens_per_session, 1);
  count("max_auth_failures_per_source", l.max_auth_failures_per_source, 1);
  l.auth_failure_window = std::chrono::milliseconds(
      c.integer(root, "auth_failure_window_ms", l.auth_failure_window.count(), 1, max_timeout_ms));

  std::map<std::string, std::uint32_t, std::less<>> seen_names;
  std::map<sha256_digest, std::string> seen_tokens;
  const auto creds = c.tables(root, "credential", "credential");
  for (std::size_t i = 0; i < creds.size(); ++i) {
    const std::string at = "credential[" + std::to_string(i) + "]";
    credential cred = parse_credential(c, *creds[i], at);
    const std::uint32_t line = creds[i]->source().begin.line;
    if (auto it = seen_names.find(cred.name); it != seen_names.end()) {
      c.fail(creds[i]->get("name"), at + ".name",
             "duplicate credential name '" + cred.name + "' (first at line " +
                 std::to_string(it->second) + ")");
    }
    if (auto it = seen_tokens.find(cred.token_sha256); it != seen_tokens.end()) {
      c.fail(creds[i]->get("token_sha256"), at + ".token_sha256",
             "the same token hash as credential '" + it->second +
                 "': each credential needs its own token");
    }
    seen_names.emplace(cred.name, line);
    seen_tokens.emplace(cred.token_sha256, cred.name);
    cfg.credentials.push_back(std::move(cred));
  }
  if (cfg.credentials.empty()) {
    c.fail_at(0, "credential",
              "no [[credential]] sections: nobody could connect (add one with name, "
              "token_sha256 and allow)");
  }

  std::map<std::string, std::uint32_t, std::less<>> seen_ids;
  const auto devs = c.tables(root, "device", "device");
  for (std::size_t i = 0; i < devs.size(); ++i) {
    const std::string at = "device[" + std::to_string(i) + "]";
    device d = parse_device(c, *devs[i], at);
    if (auto it = seen_ids.find(d.id); it != seen_ids.end()) {
      c.fail(
          devs[i]->get("id"), at + ".id",
          "duplicate device id '" + d.id + "' (first at line " + std::to_string(it->second) + ")");
    }
    seen_ids.emplace(d.id, devs[i]->source().begin.line);
    cfg.devices.push_back(std::move(d));
  }
  check_agent_credentials(c, cfg, creds);
  parse_api_settings(c, root, cfg.api, [&](const toml::table& t, const std::string& at) {
    return parse_credential(c, t, at, /*api_key=*/true);
  });
  return cfg;
}

server_config load_server_config(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::error_code ec;
  if (!in || fs::is_directory(path, ec)) {
    throw config_error(path.string() + ": cannot read the config file" +
                       (fs::exists(path, ec) ? "" : ": no such file"));
  }
  std::string text(max_config_size + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max_config_size) {
    throw config_error(path.string() + ": larger than 4 MiB, not a tether config");
  }
  server_config cfg = parse_server_config(text, path);
  for (const auto& [name, file] : {std::pair{"cert", &cfg.cert}, std::pair{"key", &cfg.key}}) {
    if (!fs::is_regular_file(*file, ec)) {
      throw config_error(path.string() + ": " + name + ": '" + file->string() +
                         "' does not exist or is not a file");
    }
  }
  // A certificate given as the key, a key for another certificate: said here, as a config
  // error naming the setting, not later in OpenSSL's words.
  if (const auto problem = transport::check_server_files(cfg.cert, cfg.key))
    throw config_error(path.string() + ": " + problem->setting + ": " + problem->why);
  return cfg;
}

}  // namespace tether::server
