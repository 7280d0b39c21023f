#include "tether/agent/allow_list.hpp"

#include <algorithm>
#include <charconv>

namespace tether::agent {
namespace {

std::string_view trimmed(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// A port of 1-65535, digits only.
bool parse_port(std::string_view s, std::uint16_t& out) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  unsigned long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v < 1 || v > 65535) return false;
  out = static_cast<std::uint16_t>(v);
  return true;
}

}  // namespace

bool allow_list::allows(std::uint16_t port) const noexcept {
  return std::any_of(ranges_.begin(), ranges_.end(),
                     [port](const range& r) { return port >= r.first && port <= r.last; });
}

std::string allow_list::text() const {
  std::string out;
  for (const auto& r : ranges_) {
    if (!out.empty()) out += ",";
    out += std::to_string(r.first);
    if (r.last != r.first) out += "-" + std::to_string(r.last);
  }
  return out;
}

result<allow_list> parse_allow_list(std::string_view text) {
  std::vector<allow_list::range> ranges;
  while (true) {
    const auto comma = text.find(',');
    const auto item = trimmed(text.substr(0, comma));
    const std::string quoted = "'" + std::string(item) + "'";
    if (item.empty()) return error{"an empty item: give ports like 22,80,5000-5100"};
    allow_list::range r;
    const auto dash = item.find('-');
    if (dash == std::string_view::npos) {
      if (!parse_port(item, r.first)) return error{quoted + " is not a port (1-65535)"};
      r.last = r.first;
    } else {
      if (!parse_port(trimmed(item.substr(0, dash)), r.first) ||
          !parse_port(trimmed(item.substr(dash + 1)), r.last))
        return error{quoted + " is not a range of ports like 5000-5100 (1-65535)"};
      if (r.last < r.first) return error{quoted + ": the range ends before it starts"};
    }
    ranges.push_back(r);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return allow_list(std::move(ranges));
}

}  // namespace tether::agent
