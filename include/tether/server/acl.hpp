#pragma once
// Access lists: which device ports a credential may open streams to. Deny by default.
//
// A rule is `DEVICE:PORT[/PROTO]`:
//   DEVICE  a glob over device ids; `*` matches any run of characters, including none
//   PORT    a number (1-65535), `*`, or an inclusive range `8000-8099`
//   PROTO   `tcp` or `udp`; without it the rule covers both
// `*` alone (or `*/tcp`, `*/udp`) covers every device and port.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/mux/tunnel.hpp"
#include "tether/result.hpp"

namespace tether::server {

struct acl_rule {
  std::string device_glob;             // "dev-*"; "*" matches every id
  std::uint16_t port_min = 1;          // inclusive
  std::uint16_t port_max = 65535;      // inclusive
  std::optional<mux::protocol> proto;  // nullopt: tcp and udp
  std::string text;                    // the pattern as written, for logs and messages

  /// True if this rule covers the stream target.
  bool matches(std::string_view device, std::uint16_t port, mux::protocol p) const;
};

/// Parses one pattern. The error message names the pattern and what is wrong with it, e.g.
/// "ACL pattern 'dev-1:99999': port 99999 out of range (1-65535)".
result<acl_rule> parse_acl_rule(std::string_view text);

/// True if `glob` (with `*` wildcards) matches all of `text`. Case-sensitive, like device ids.
bool glob_match(std::string_view glob, std::string_view text);

class acl {
 public:
  acl() = default;  // allows nothing
  explicit acl(std::vector<acl_rule> rules);

  /// True if any rule covers device:port/proto; false when no rule does (deny by default).
  /// Const and thread-safe.
  bool allows(std::string_view device, std::uint16_t port, mux::protocol proto) const;

  const std::vector<acl_rule>& rules() const noexcept { return rules_; }

 private:
  std::vector<acl_rule> rules_;
};

}  // namespace tether::server
