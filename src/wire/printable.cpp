#include "tether/printable.hpp"

namespace tether {

std::string printable(std::string_view peer_text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(peer_text.size());
  for (const char c : peer_text) {
    const auto b = static_cast<unsigned char>(c);
    switch (b) {
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (b >= 0x20 && b < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += hex[b >> 4];
      out += hex[b & 0xf];
    }
  }
  return out;
}

}  // namespace tether
