#pragma once
// Port mappings from the command line: `-L [BIND:]LPORT:DEVICE:DPORT` (TCP) and
// `-U [BIND:]LPORT:DEVICE:DPORT` (UDP), as with `ssh -L`. Pure parsing.
//
//   BIND    where to listen: 127.0.0.1 by default; a host name, an IPv4 literal, a bracketed
//           IPv6 literal ([::1]), or `*` / empty for every IPv4 interface (0.0.0.0)
//   LPORT   0-65535; 0 lets the system pick a free port
//   DEVICE  a device id (tls://) or a host name / IP as the SSH server sees it (ssh://);
//           IPv6 literals in brackets
//   DPORT   1-65535

#include <cstdint>
#include <string>
#include <string_view>

#include "tether/mux/tunnel.hpp"
#include "tether/result.hpp"

namespace tether::client {

struct mapping {
  mux::protocol proto = mux::protocol::tcp;
  std::string bind_host = "127.0.0.1";  // IPv6 literals without brackets
  std::uint16_t local_port = 0;
  std::string device;  // IPv6 literals without brackets; "*" for SOCKS
  std::uint16_t device_port = 0;
  // `-D [BIND:]LPORT`: a SOCKS5 listener; each connection names its own device and port.
  bool socks = false;

  /// For logs: "127.0.0.1:2222 -> dev-42:22 tcp", "[::1]:5353 -> dev-42:53 udp",
  /// "127.0.0.1:1080 socks5".
  std::string text() const;
};

/// Parses one spec given with -L (proto tcp) or -U (proto udp). Errors name the option,
/// the spec and the part, e.g. "-L 'abc': expected [BIND:]LPORT:DEVICE:DPORT" or
/// "-L '70000:dev-42:22': local port 70000 out of range (0-65535)".
result<mapping> parse_mapping(std::string_view spec, mux::protocol proto);

/// `-D [BIND:]LPORT`: a SOCKS5 listener (device "*", port 0). Errors name the option.
result<mapping> parse_socks_mapping(std::string_view spec);

/// The local address of a mapping written on its own ("[BIND:]LPORT": "2222",
/// "127.0.0.1:2222", "[::1]:0", "*:8080"), as in a tunnels file. Sets bind_host and
/// local_port of the result. Errors name the text and the part.
result<mapping> parse_local_address(std::string_view text);

/// The longest device id or host name (DNS's limit on a name).
inline constexpr std::size_t max_device_length = 253;

/// Why `device` (not bracketed) is not a device id or host name, or "" when it is one: "device
/// 'dev 42' is not a device id or host name (A-Z a-z 0-9 . _ -)", "the device is 300
/// characters long; a device id or host name has at most 253".
std::string device_name_problem(std::string_view device);

/// A DEVICE written on its own: a device id, a host name or an IPv6 literal (with or without
/// brackets, since no port follows). Returns it without brackets.
result<std::string> parse_device(std::string_view text);

}  // namespace tether::client
