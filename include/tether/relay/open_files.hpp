#pragma once
// The process's open-files limit: every connection a tether process relays is a descriptor
// (two, on a client: the local one and its share of the tunnel), so the limit bounds what it
// can carry. Linux starts processes at a soft limit of 1,024 whatever the hard limit allows.

#include <cstdint>

namespace tether::relay {

struct open_files_limit {
  std::uint64_t before = 0;  // soft limit at start
  std::uint64_t now = 0;     // soft limit after raising it
  std::uint64_t hard = 0;
};

/// Raises the soft limit as far as the hard limit allows and reports what it did.
open_files_limit raise_open_files_limit() noexcept;

}  // namespace tether::relay
