#pragma once
// The server a client connects to: `tls://HOST[:PORT]` (tether's own protocol) or
// `ssh://[USER@]HOST[:PORT]` (direct-tcpip channels through an SSH server). Pure parsing.

#include <cstdint>
#include <string>
#include <string_view>

#include "tether/result.hpp"

namespace tether::client {

enum class scheme { tls, ssh };

inline constexpr std::uint16_t default_tls_port = 7443;
inline constexpr std::uint16_t default_ssh_port = 22;

struct server_url {
  scheme kind = scheme::tls;
  std::string user;  // ssh only; empty: the caller fills in the local user name
  std::string host;  // IPv6 literals without brackets ("::1")
  std::uint16_t port = default_tls_port;

  /// Canonical form: "tls://example.com:7443", "ssh://alice@[::1]:22".
  std::string text() const;

  bool operator==(const server_url&) const = default;
};

/// Parses a server URL. The scheme is required (and case-insensitive); the port defaults to
/// 7443 for tls and 22 for ssh. Errors name the URL and the part, e.g.
/// "server URL 'http://x': unknown scheme 'http' (use tls://HOST[:PORT] or
/// ssh://[USER@]HOST[:PORT])".
result<server_url> parse_server_url(std::string_view text);

/// Validates a host as written on a command line: a host name, an IPv4 literal or a
/// bracketed IPv6 literal ("[::1]"). Returns it without brackets. Resolves nothing.
result<std::string> parse_host(std::string_view text);


}  // namespace tether::client
