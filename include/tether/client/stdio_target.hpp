#pragma once
// The one target of `tether connect URL --stdio TARGET`, as OpenSSH's ProxyCommand hands it
// over in `%h:%p`. Pure parsing.
//
//   DEVICE:PORT    a device id (tls://) or a host name / IPv4 literal (ssh://)
//   [V6]:PORT      an IPv6 literal in brackets
//   V6:PORT        an IPv6 literal without brackets, as ssh's %h gives it for `ssh ::1`:
//                  the port is what follows the last ':', and the rest must be an IPv6
//                  address

#include <string_view>

#include "tether/mux/tunnel.hpp"
#include "tether/result.hpp"

namespace tether::client {

/// Parses a --stdio target into a TCP target (IPv6 literals without brackets). Errors name
/// the option, the text and the part, e.g. "--stdio 'dev-42': expected DEVICE:PORT (or
/// [IPv6]:PORT)" or "--stdio 'dev-42:0': port 0 out of range (1-65535)".
result<mux::target> parse_stdio_target(std::string_view text);

}  // namespace tether::client
