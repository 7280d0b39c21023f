#include "tether/client/tunnels_file.hpp"

#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "tether/client/mapping_names.hpp"
#include "tether/mux/session.hpp"
#include "tether/toml_check.hpp"

namespace tether::client {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t max_file_size = 4 * 1024 * 1024;  // far above any real file
// Bounds as for connect's flags: a day is beyond any sensible wait.
constexpr double max_seconds = 86400;
constexpr std::int64_t max_udp_flows = 1000000;
constexpr std::int64_t max_retries = 1000000;

// What a server has besides its URL; in the one-server shape these are top-level keys.
constexpr std::array<std::string_view, 15> setting_keys{"ca",
                                                        "pin",
                                                        "token_file",
                                                        "max_stream_window",
                                                        "lanes",
                                                        "identity",
                                                        "known_hosts",
                                                        "accept_new_host_key",
                                                        "passphrase_file",
                                                        "connect_timeout",
                                                        "wait_for_session",
                                                        "udp_idle",
                                                        "udp_max_flows",
                                                        "retry",
                                                        "tunnel"};

// The settings with the key that names the server's URL in front.
constexpr std::array<std::string_view, setting_keys.size() + 1> with_url_key(
    std::string_view url_key) {
  std::array<std::string_view, setting_keys.size() + 1> keys{url_key};
  for (std::size_t i = 0; i < setting_keys.size(); ++i) keys[i + 1] = setting_keys[i];
  return keys;
}

constexpr auto one_server_keys = with_url_key("server");
constexpr auto server_block_keys = with_url_key("url");

constexpr std::array<std::string_view, 5> tunnel_keys{"name", "local", "device", "port", "proto"};

// A duration in seconds, integer or not, within (0, max_seconds].
std::chrono::milliseconds seconds(const toml_checker& c, const toml::table& t,
                                  std::string_view name, const std::string& key,
                                  std::chrono::milliseconds fallback) {
  const toml::node* n = t.get(name);
  if (!n) return fallback;
  double s = 0;
  if (auto i = n->as_integer()) s = static_cast<double>(i->get());
  else if (auto f = n->as_floating_point()) s = f->get();
  else c.fail(n, key, std::string("expected seconds (a number), got ") + toml_type_name(n->type()));
  if (!(s >= 0.001 && s <= max_seconds)) {
    std::ostringstream what;
    what << s << " is out of range: give seconds from 0.001 to " << max_seconds;
    c.fail(n, key, what.str());
  }
  return std::chrono::milliseconds(static_cast<long long>(std::llround(s * 1000)));
}

tunnel_spec parse_tunnel(const toml_checker& c, const toml::table& t, const std::string& at,
                         const server_url& url, std::span<const std::string_view> outer_keys) {
  c.only_known_keys(t, at + ".", tunnel_keys, outer_keys);
  tunnel_spec spec;
  spec.line = t.source().begin.line;

  if (const toml::node* n = t.get("name")) {
    auto name = check_mapping_name(*c.string_of(*n, at + ".name"));
    if (!name) c.fail(n, at + ".name", name.message());
    spec.name = std::move(name).value();
  }

  const std::string local_key = at + ".local";
  const toml::node* local = t.get("local");
  if (!local) c.fail(&t, local_key, "missing (the local address to listen on, like \"127.0.0.1:2222\" or 2222)");
  std::string local_text;
  if (auto port = local->as_integer()) local_text = std::to_string(port->get());
  else local_text = *c.string_of(*local, local_key);
  auto parsed = parse_local_address(local_text);
  if (!parsed) c.fail(local, local_key, parsed.message());
  spec.map = std::move(parsed).value();

  const std::string device_key = at + ".device";
  auto device = parse_device(c.require_string(t, "device", device_key,
                                              url.kind == scheme::tls
                                                  ? "the device id, like \"dev-42\""
                                                  : "the host the SSH server connects to"));
  if (!device) c.fail(t.get("device"), device_key, device.message());
  spec.map.device = std::move(device).value();

  if (!t.contains("port")) c.fail(&t, at + ".port", "missing (the device port, like 22)");
  spec.map.device_port = static_cast<std::uint16_t>(c.integer(t, "port", at + ".port", 0, 1, 65535));

  if (const toml::node* n = t.get("proto")) {
    const std::string& proto = *c.string_of(*n, at + ".proto");
    if (const auto p = mux::protocol_from_name(proto)) {
      spec.map.proto = *p;
    } else {
      c.fail(n, at + ".proto", "'" + proto + "' is not a protocol (use \"tcp\" or \"udp\")");
    }
    if (spec.map.proto == mux::protocol::udp && url.kind == scheme::ssh)
      c.fail(n, at + ".proto", "udp needs a tls:// server (SSH forwards only TCP)");
  }
  return spec;
}

// The settings and tunnels of one server: the root table (one-server shape) or a [[server]]
// section. `url_key` is "server" or "url"; `at` prefixes keys in messages ("" or
// "server[1].").
server_spec parse_server(const toml_checker& c, const toml::table& t, std::string_view url_key,
                         const std::string& at, std::span<const std::string_view> outer_keys) {
  server_spec spec;
  auto& s = spec.settings;

  const std::string url_name = at + std::string(url_key);
  const std::string& url_text =
      c.require_string(t, url_key, url_name, "tls://HOST[:PORT] or ssh://[USER@]HOST[:PORT]");
  // The root table "begins" at line 1 whatever comes first: there, the URL's line says where
  // the server is.
  spec.line = at.empty() ? t.get(url_key)->source().begin.line : t.source().begin.line;
  auto url = parse_server_url(url_text);
  if (!url) c.fail(t.get(url_key), url_name, url.message());
  s.url = std::move(url).value();
  const bool tls = s.url.kind == scheme::tls;

  auto only_for = [&](std::string_view key, bool allowed, std::string_view what) {
    if (t.contains(key) && !allowed)
      c.fail(t.get(key), at + std::string(key), std::string(what));
  };
  only_for("ca", tls, "for tls:// servers only (ssh:// checks known_hosts)");
  only_for("pin", tls, "for tls:// servers only (ssh:// checks known_hosts)");
  only_for("token_file", tls, "for tls:// servers only (ssh:// uses identity or ssh-agent)");
  only_for("max_stream_window", tls,
           "for tls:// servers only (SSH channels have the server's windows)");
  only_for("lanes", tls, "for tls:// servers only (an SSH server keeps one connection)");
  only_for("identity", !tls, "for ssh:// servers only (tls:// uses token_file)");
  only_for("known_hosts", !tls, "for ssh:// servers only (tls:// uses ca or pin)");
  only_for("accept_new_host_key", !tls, "for ssh:// servers only");
  only_for("passphrase_file", !tls, "for ssh:// servers only");

  s.ca_file = c.path(t, "ca", at + "ca");
  if (const toml::node* n = t.get("pin")) {
    s.pin = *c.string_of(*n, at + "pin");
    if (!s.ca_file.empty())
      c.fail(n, at + "pin", "give ca or pin, not both (a pinned key is trusted without a CA)");
  }
  s.token_file = c.path(t, "token_file", at + "token_file");
  if (const toml::node* n = t.get("token_file")) spec.token_file_line = n->source().begin.line;
  s.max_stream_window = static_cast<std::uint32_t>(c.integer(
      t, "max_stream_window", at + "max_stream_window", 0, mux::min_window, mux::max_window));
  s.lanes = c.boolean(t, "lanes", at + "lanes", true);
  if (const toml::node* n = t.get("identity")) {
    const std::string key = at + "identity";
    if (const auto* arr = n->as_array()) {
      for (std::size_t i = 0; i < arr->size(); ++i) {
        const std::string el_key = key + "[" + std::to_string(i) + "]";
        const std::string& p = *c.string_of(*arr->get(i), el_key);
        if (p.empty()) c.fail(arr->get(i), el_key, "empty path");
        s.identity_files.push_back(c.resolve(p));
      }
    } else {
      s.identity_files.push_back(c.path(t, "identity", key));
    }
  }
  s.known_hosts = c.path(t, "known_hosts", at + "known_hosts");
  s.accept_new_host_key = c.boolean(t, "accept_new_host_key", at + "accept_new_host_key", false);
  s.passphrase_file = c.path(t, "passphrase_file", at + "passphrase_file");
  s.connect_timeout = seconds(c, t, "connect_timeout", at + "connect_timeout", s.connect_timeout);
  s.wait_for_session =
      seconds(c, t, "wait_for_session", at + "wait_for_session", s.wait_for_session);
  s.udp_idle = seconds(c, t, "udp_idle", at + "udp_idle", s.udp_idle);
  s.udp_max_flows = static_cast<std::size_t>(
      c.integer(t, "udp_max_flows", at + "udp_max_flows",
                static_cast<std::int64_t>(s.udp_max_flows), 1, max_udp_flows));

  if (const toml::node* n = t.get("retry")) {
    const std::string key = at + "retry";
    if (auto word = n->as_string(); word && word->get() == "forever")
      s.retries = static_cast<std::size_t>(-1);  // retry_forever
    else if (n->is_integer())
      s.retries = static_cast<std::size_t>(c.integer(t, "retry", key, 0, 0, max_retries));
    else
      c.fail(n, key, "expected a number of attempts or \"forever\"");
  }

  const std::string tunnel_key = at + "tunnel";
  const auto tunnels = c.tables(t, "tunnel", tunnel_key);
  for (std::size_t i = 0; i < tunnels.size(); ++i)
    spec.tunnels.push_back(parse_tunnel(c, *tunnels[i],
                                        tunnel_key + "[" + std::to_string(i) + "]", s.url,
                                        outer_keys));
  if (spec.tunnels.empty())
    c.fail(&t, tunnel_key,
           at.empty() ? "no [[tunnel]] sections: nothing to forward"
                      : "no [[server.tunnel]] sections under this server: nothing to forward");
  return spec;
}

// Refuses a second tunnel with a name or a local address that one before it has (the
// second could never be added, or never listen).
void check_unique(const toml_checker& c, const tunnels_file& file) {
  std::map<std::string, const tunnel_spec*> names;
  std::map<std::string, const tunnel_spec*> locals;
  for (const auto& server : file.servers)
    for (const auto& t : server.tunnels) {
      if (!t.name.empty())
        if (auto [it, fresh] = names.emplace(t.name, &t); !fresh)
          c.fail_at(t.line, "name",
                    "'" + t.name + "' is already the name of the tunnel at line " +
                        std::to_string(it->second->line));
      if (t.map.local_port == 0) continue;  // each gets a port of its own
      const auto key = std::string(t.map.proto == mux::protocol::udp ? "udp " : "tcp ") +
                       t.map.bind_host + " " + std::to_string(t.map.local_port);
      if (auto [it, fresh] = locals.emplace(key, &t); !fresh)
        c.fail_at(t.line, "local",
                  "the same local address as the tunnel at line " +
                      std::to_string(it->second->line) + " ('" + it->second->label() + "')");
    }
}

}  // namespace

std::string tunnel_spec::label() const {
  return name.empty() ? default_mapping_name(map) : name;
}

bool tunnel_spec::same_as(const tunnel_spec& o) const {
  return name == o.name && map.proto == o.map.proto && map.bind_host == o.map.bind_host &&
         map.local_port == o.map.local_port && map.device == o.map.device &&
         map.device_port == o.map.device_port;
}

tunnels_file parse_tunnels_file(std::string_view text, const fs::path& source) {
  const toml_checker c(source);
  const toml::table root = c.parse(text);
  tunnels_file file;
  file.path = source;

  const toml::node* server = root.get("server");
  if (server && server->is_array()) {
    // Several servers: only [[server]] sections at the top.
    static constexpr std::array<std::string_view, 1> top{"server"};
    for (auto&& [k, v] : root) {
      if (k.str() == "server") continue;
      if (std::find(setting_keys.begin(), setting_keys.end(), k.str()) != setting_keys.end())
        c.fail(&v, k.str(),
               k.str() == "tunnel"
                   ? "with [[server]] sections, tunnels go under their server as [[server.tunnel]]"
                   : "with [[server]] sections, settings go inside each [[server]]");
    }
    c.only_known_keys(root, "", top);
    const auto blocks = c.tables(root, "server", "server");
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const std::string at = "server[" + std::to_string(i) + "].";
      c.only_known_keys(*blocks[i], at, server_block_keys);
      file.servers.push_back(parse_server(c, *blocks[i], "url", at, server_block_keys));
    }
  } else {
    c.only_known_keys(root, "", one_server_keys);
    if (!server)
      c.fail_at(0, "server",
                "missing (the server's URL, like server = \"tls://tunnel.example.com:7443\", "
                "or [[server]] sections with url = ...)");
    file.servers.push_back(parse_server(c, root, "server", "", one_server_keys));
  }
  check_unique(c, file);
  return file;
}

tunnels_file load_tunnels_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw config_error(path.string() + ": cannot read the tunnels file: " + std::strerror(errno));
  std::string text;
  text.resize(max_file_size + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max_file_size)
    throw config_error(path.string() + ": larger than 4 MiB; is this the tunnels file?");
  return parse_tunnels_file(text, path);
}

}  // namespace tether::client
