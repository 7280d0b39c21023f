#include "tether/transport/host.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <string>

namespace tether::transport {

bool is_valid_host(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  if (h.find(':') != std::string_view::npos) {
    // inet_pton reads a C string: a NUL would end it early and let what follows through.
    if (h.find('\0') != std::string_view::npos) return false;
    in6_addr a{};
    return inet_pton(AF_INET6, std::string(h).c_str(), &a) == 1;
  }
  if (h.front() == '-' || h.front() == '.') return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
  });
}

}  // namespace tether::transport
