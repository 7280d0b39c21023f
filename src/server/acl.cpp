#include "tether/server/acl.hpp"

#include <charconv>

namespace tether::server {
namespace {

// Device ids are [A-Za-z0-9._-]; a pattern may add `*`. Anything else (spaces, `:`, `?`)
// is a typo that would silently match nothing, so it is refused.
bool is_glob_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '*';
}

constexpr std::size_t max_glob_length = 128;

error fail(std::string_view pattern, std::string_view what) {
  return error{"ACL pattern '" + std::string(pattern) + "': " + std::string(what)};
}

// Parses one port number of a PORT part; `what` is empty on success.
std::uint16_t parse_port(std::string_view s, std::string& what) {
  if (s.empty()) {
    what = "empty port";
    return 0;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      what = "port '" + std::string(s) + "' is not a number, '*' or a range like 8000-8099";
      return 0;
    }
  }
  unsigned long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || v < 1 || v > 65535) {
    what = "port " + std::string(s) + " out of range (1-65535)";
    return 0;
  }
  return static_cast<std::uint16_t>(v);
}

}  // namespace

bool glob_match(std::string_view glob, std::string_view text) {
  // Greedy match with one backtrack point (the last `*`): linear in practice, and never
  // exponential, whatever the pattern.
  std::size_t g = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (g < glob.size() && glob[g] == '*') {
      star = g++;
      resume = t;
    } else if (g < glob.size() && glob[g] == text[t]) {
      ++g;
      ++t;
    } else if (star != std::string_view::npos) {
      g = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

bool acl_rule::matches(std::string_view device, std::uint16_t port, mux::protocol p) const {
  if (proto && *proto != p) return false;
  if (port < port_min || port > port_max) return false;
  return glob_match(device_glob, device);
}

result<acl_rule> parse_acl_rule(std::string_view text) {
  acl_rule rule;
  rule.text = std::string(text);
  if (text.empty()) return fail(text, "empty pattern");

  std::string_view body = text;
  if (auto slash = body.find('/'); slash != std::string_view::npos) {
    const std::string_view suffix = body.substr(slash + 1);
    rule.proto = mux::protocol_from_name(suffix);
    if (!rule.proto)
      return fail(text, "unknown protocol '" + std::string(suffix) + "' (use /tcp or /udp)");
    body = body.substr(0, slash);
  }

  if (body == "*") {  // every device, every port
    rule.device_glob = "*";
    return rule;
  }

  const auto colon = body.find(':');
  if (colon == std::string_view::npos || body.find(':', colon + 1) != std::string_view::npos) {
    return fail(text, "expected DEVICE:PORT, e.g. dev-42:22, dev-*:8000-8099 or *:*");
  }
  const std::string_view device = body.substr(0, colon);
  const std::string_view port = body.substr(colon + 1);

  if (device.empty()) return fail(text, "empty device (use * for any device)");
  if (device.size() > max_glob_length) return fail(text, "device pattern longer than 128");
  for (char c : device) {
    if (!is_glob_char(c)) {
      return fail(text, "character '" + std::string(1, c) +
                            "' cannot appear in a device id (allowed: A-Z a-z 0-9 . _ - and *)");
    }
  }
  rule.device_glob = std::string(device);

  std::string what;
  if (port == "*") {
    rule.port_min = 1;
    rule.port_max = 65535;
  } else if (auto dash = port.find('-'); dash != std::string_view::npos) {
    if (dash == 0 || dash + 1 == port.size()) {
      return fail(text, "port range '" + std::string(port) +
                            "' needs a first and a last port, e.g. 8000-8099");
    }
    rule.port_min = parse_port(port.substr(0, dash), what);
    if (what.empty()) rule.port_max = parse_port(port.substr(dash + 1), what);
    if (what.empty() && rule.port_min > rule.port_max) {
      what = "port range " + std::string(port) + " is backwards";
    }
  } else {
    rule.port_min = rule.port_max = parse_port(port, what);
  }
  if (!what.empty()) return fail(text, what);
  return rule;
}

acl::acl(std::vector<acl_rule> rules) : rules_(std::move(rules)) {}

bool acl::allows(std::string_view device, std::uint16_t port, mux::protocol proto) const {
  for (const auto& r : rules_) {
    if (r.matches(device, port, proto)) return true;
  }
  return false;
}

}  // namespace tether::server
