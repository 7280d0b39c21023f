#include "tether/client/mapping_names.hpp"

#include <algorithm>

namespace tether::client {
namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

result<std::string> check_mapping_name(std::string_view name) {
  if (name.empty()) return error{"empty mapping name"};
  const auto shown =
      name.size() > max_mapping_name ? std::string(name.substr(0, 20)) + "..." : std::string(name);
  if (name.size() > max_mapping_name)
    return error{"mapping name '" + shown + "' is longer than " + std::to_string(max_mapping_name) +
                 " characters"};
  if (!std::all_of(name.begin(), name.end(), is_name_char) || !is_alnum(name.front()))
    return error{"mapping name '" + shown +
                 "' must be letters, digits, '.', '_' or '-', starting with a letter or digit"};
  return std::string(name);
}

std::string default_mapping_name(const mapping& m) {
  if (m.socks) return "socks5:*";  // the ':' keeps it apart from names people choose
  const auto device = m.device.find(':') != std::string::npos ? "[" + m.device + "]" : m.device;
  return device + ":" + std::to_string(m.device_port) +
         (m.proto == mux::protocol::udp ? "/udp" : "");
}

std::string mapping_names::claim_default(const mapping& m) {
  const auto base = default_mapping_name(m);
  if (claim(base)) return base;
  for (unsigned n = 2;; ++n) {
    auto name = base + "#" + std::to_string(n);
    if (claim(name)) return name;
  }
}

}  // namespace tether::client
