#pragma once
// The process's open-files limit: every session, pending handshake and device stream of the
// server is one descriptor, so the limit bounds what the server can carry.

#include <cstdint>

namespace tether::server {

struct open_files_limit {
  std::uint64_t before = 0;  // soft limit at start
  std::uint64_t now = 0;     // soft limit after raising it
  std::uint64_t hard = 0;
};

/// Raises the soft limit as far as the hard limit allows and reports what it did.
open_files_limit raise_open_files_limit() noexcept;

}  // namespace tether::server
