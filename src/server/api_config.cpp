#include "api_config.hpp"

#include <asio/ip/address.hpp>
#include <map>

namespace tether::server {

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  asio::error_code ec;
  const auto a = asio::ip::make_address(std::string(host), ec);
  return !ec && a.is_loopback();
}

void parse_api_settings(const toml_checker& c, const toml::table& root, api_settings& api,
                        const key_parser& parse_key) {
  using ms = std::chrono::milliseconds;
  constexpr std::int64_t max_ms = 24LL * 3600 * 1000;
  if (const toml::node* n = root.get("api_listen")) {
    auto ep = parse_endpoint(*c.string_of(*n, "api_listen"));
    if (!ep) c.fail(n, "api_listen", ep.message());
    api.listen = std::move(ep).value();
  }
  api.state_dir = c.path(root, "state_dir", "state_dir");

  if (const toml::node* n = root.get("api")) {
    const toml::table* t = n->as_table();
    if (!t) c.fail(n, "api", "expected an [api] table");
    static constexpr std::array<std::string_view, 16> known{
        "tls",           "max_payload",        "max_wait_ms",     "max_reply",
        "max_devices_per_message", "max_messages_in_flight", "max_header_bytes",
        "max_headers",   "request_timeout_ms",
        "idle_timeout_ms", "max_connections",  "max_connections_per_source",
        "retention_days",  "retention_count", "webhook_rate_per_minute", "webhook_burst"};
    c.only_known_keys(*t, "api.", known, api_top_level_keys);
    api.tls = c.boolean(*t, "tls", "api.tls", api.tls);
    api.max_payload = static_cast<std::size_t>(
        c.integer(*t, "max_payload", "api.max_payload", 64 * 1024, 1, 16 * 1024 * 1024));
    api.max_wait = ms(c.integer(*t, "max_wait_ms", "api.max_wait_ms", api.max_wait.count(), 0,
                                max_ms));
    api.max_reply = static_cast<std::size_t>(
        c.integer(*t, "max_reply", "api.max_reply", 64 * 1024, 1, 16 * 1024 * 1024));
    api.max_devices_per_message = static_cast<std::uint32_t>(
        c.integer(*t, "max_devices_per_message", "api.max_devices_per_message",
                  api.max_devices_per_message, 1, 10000));
    api.max_messages_in_flight = static_cast<std::uint32_t>(
        c.integer(*t, "max_messages_in_flight", "api.max_messages_in_flight",
                  api.max_messages_in_flight, 1, 1'000'000));
    api.max_header_bytes = static_cast<std::size_t>(
        c.integer(*t, "max_header_bytes", "api.max_header_bytes", 8 * 1024, 256, 1024 * 1024));
    api.max_headers = static_cast<std::uint32_t>(
        c.integer(*t, "max_headers", "api.max_headers", api.max_headers, 8, 1000));
    api.request_timeout = ms(c.integer(*t, "request_timeout_ms", "api.request_timeout_ms",
                                       api.request_timeout.count(), 100, max_ms));
    api.idle_timeout = ms(c.integer(*t, "idle_timeout_ms", "api.idle_timeout_ms",
                                    api.idle_timeout.count(), 100, max_ms));
    api.max_connections = static_cast<std::uint32_t>(c.integer(
        *t, "max_connections", "api.max_connections", api.max_connections, 1, 1'000'000));
    api.max_connections_per_source = static_cast<std::uint32_t>(
        c.integer(*t, "max_connections_per_source", "api.max_connections_per_source",
                  api.max_connections_per_source, 1, 1'000'000));
    api.retention_age = std::chrono::hours(
        24 * c.integer(*t, "retention_days", "api.retention_days",
                       api.retention_age.count() / 24, 1, 100 * 365));
    api.retention_count = static_cast<std::uint64_t>(
        c.integer(*t, "retention_count", "api.retention_count",
                  static_cast<std::int64_t>(api.retention_count), 1, 1'000'000'000'000LL));
    api.webhook_rate_per_minute = static_cast<std::uint32_t>(
        c.integer(*t, "webhook_rate_per_minute", "api.webhook_rate_per_minute",
                  api.webhook_rate_per_minute, 1, 1'000'000));
    api.webhook_burst = static_cast<std::uint32_t>(
        c.integer(*t, "webhook_burst", "api.webhook_burst", api.webhook_burst, 1, 1'000'000));
    if (api.request_timeout <= api.max_wait)
      c.fail(t->get("request_timeout_ms") ? t->get("request_timeout_ms") : t->get("max_wait_ms"),
             "api.request_timeout_ms",
             std::to_string(api.request_timeout.count()) +
                 " is not above max_wait_ms (" + std::to_string(api.max_wait.count()) +
                 "): a request that waits for a reply would be cut off first");
  }

  std::map<std::string, std::uint32_t, std::less<>> seen;
  const auto keys = c.tables(root, "api_key", "api_key");
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string at = "api_key[" + std::to_string(i) + "]";
    credential key = parse_key(*keys[i], at);
    if (auto it = seen.find(key.name); it != seen.end())
      c.fail(keys[i]->get("name"), at + ".name",
             "duplicate API key name '" + key.name + "' (first at line " +
                 std::to_string(it->second) + ")");
    seen.emplace(key.name, keys[i]->source().begin.line);
    api.keys.push_back(std::move(key));
  }

  if (!api.listen) return;
  if (api.state_dir.empty())
    c.fail(root.get("api_listen"), "state_dir",
           "missing: the API keeps its message log there (like \"state\", beside the config)");
  if (!api.tls && !is_loopback_host(api.listen->host))
    c.fail(root.get("api_listen"), "api.tls",
           "false is allowed only when api_listen is a loopback address; '" + api.listen->host +
               "' is not: API keys would cross the network in clear");
}

}  // namespace tether::server
