#pragma once
// The ports of its device an agent lets the server reach (`tether agent --allow
// 22,80,5000-5100`). Nothing is allowed unless listed: an agent is a way into the device.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tether/result.hpp"

namespace tether::agent {

class allow_list {
 public:
  struct range {
    std::uint16_t first = 0;
    std::uint16_t last = 0;
  };

  allow_list() = default;  // allows nothing
  explicit allow_list(std::vector<range> ranges) : ranges_(std::move(ranges)) {}

  /// Whether `port` (TCP or UDP alike) is listed.
  bool allows(std::uint16_t port) const noexcept;
  bool empty() const noexcept { return ranges_.empty(); }

  /// "22,80,5000-5100", as the flag gives it.
  std::string text() const;

 private:
  std::vector<range> ranges_;
};

/// Parses comma-separated ports and FIRST-LAST ranges (1-65535), blanks around items
/// allowed: "22, 80,5000-5100". Errors name the item at fault.
result<allow_list> parse_allow_list(std::string_view text);

}  // namespace tether::agent
