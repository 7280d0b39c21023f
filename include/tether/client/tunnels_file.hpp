#pragma once
// The tunnels file of `tether up -f FILE` (docs/TUNNELS.md): the servers to connect to, how
// to authenticate to each, and the named port mappings of each. Pure parsing and checking;
// nothing is read but the file itself (token and key files are read when dialing).
//
// Two shapes. One server:
//
//   server = "tls://tunnel.example.com:7443"
//   ca = "ca.pem"
//   token_file = "token"
//   [[tunnel]]
//   name = "pi-ssh"
//   local = "127.0.0.1:2222"
//   device = "dev-42"
//   port = 22
//
// Several servers, each with its own settings and tunnels:
//
//   [[server]]
//   url = "tls://eu.example.com:7443"
//   token_file = "eu.token"
//   [[server.tunnel]]
//   ...
//
// Errors are config_error "FILE:LINE: KEY: WHAT", e.g.
// "tunnels.toml:9: tunnel[0].port: 70000 is above the maximum 65535".

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/client/mapping.hpp"
#include "tether/client/url.hpp"

namespace tether::client {

/// How to reach and authenticate to one server: what `connect` takes as flags.
struct server_settings {
  server_url url;
  // tls://
  std::filesystem::path ca_file;  // empty: the system trust store
  std::string pin;                // "sha256:HEX" instead of a CA
  std::filesystem::path token_file;  // empty: TETHER_TOKEN
  std::uint32_t max_stream_window = 0;  // how far stream windows may grow; 0: the default
  bool lanes = true;  // a second session for streams that turn bulk (docs/PROTOCOL.md)
  // ssh://
  std::vector<std::filesystem::path> identity_files;
  std::filesystem::path known_hosts;
  bool accept_new_host_key = false;
  std::filesystem::path passphrase_file;
  // both
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds wait_for_session{30000};
  std::chrono::milliseconds udp_idle{60000};
  std::size_t udp_max_flows = 4096;
  std::optional<std::size_t> retries;  // as proxy_options::retries

  bool operator==(const server_settings&) const = default;
};

/// One [[tunnel]]: a mapping and the name the file gives it, if any (without one, the proxy
/// gives it the default name of its target).
struct tunnel_spec {
  std::string name;
  mapping map;
  std::uint32_t line = 0;  // where it starts in the file, for messages

  /// Same name (or both none) and the same mapping: a reload leaves it alone.
  bool same_as(const tunnel_spec& o) const;
  /// For messages: the name, else the default name of the target ("dev-42:22").
  std::string label() const;
};

struct server_spec {
  server_settings settings;
  std::vector<tunnel_spec> tunnels;
  // Where the server is in the file, for messages: its [[server]] line, or in the
  // one-server shape the line of `server = ...` (the top of the file holds comments).
  std::uint32_t line = 0;
  std::uint32_t token_file_line = 0;  // the line of its token_file, when it has one
};

struct tunnels_file {
  std::filesystem::path path;
  std::vector<server_spec> servers;  // at least one, each with at least one tunnel
};

/// Parses the text of a tunnels file; `source` names it in messages and anchors relative
/// paths. Throws config_error. Names are unique in the whole file (one control socket
/// serves them all), and so are local addresses.
tunnels_file parse_tunnels_file(std::string_view text, const std::filesystem::path& source);

/// Reads and parses `path` (at most 4 MiB). Throws config_error, also when it cannot be read.
tunnels_file load_tunnels_file(const std::filesystem::path& path);

}  // namespace tether::client
