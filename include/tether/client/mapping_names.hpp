#pragma once
// Names of mappings, unique in one process: `tether map rm NAME` must mean one mapping even
// when several proxies (one per server, `tether up`) share a control socket, so they share
// one of these.
//
// A name a user gives: 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or a
// digit. A default name is the target, "dev-42:22" (TCP) or "dev-42:53/udp" (UDP); a
// second mapping to the same target gets "dev-42:22#2", then "#3", ... Default names have a
// ':' that chosen names cannot have, so the two never collide by accident.
//
// Threading: one executor; not thread-safe.

#include <set>
#include <string>
#include <string_view>

#include "tether/client/mapping.hpp"
#include "tether/result.hpp"

namespace tether::client {

inline constexpr std::size_t max_mapping_name = 64;

/// Checks a name a user chose; the error says what is wrong with it.
result<std::string> check_mapping_name(std::string_view name);

/// The default name of `m` before de-duplication: "dev-42:22", "dev-42:53/udp",
/// "[fd00::1]:22".
std::string default_mapping_name(const mapping& m);

class mapping_names {
 public:
  bool taken(std::string_view name) const { return names_.find(name) != names_.end(); }
  /// Takes `name`; false if it is taken already.
  bool claim(const std::string& name) { return names_.insert(name).second; }
  /// Takes and returns the first free one of default_mapping_name(m), "...#2", "...#3", ...
  std::string claim_default(const mapping& m);
  void release(const std::string& name) { names_.erase(name); }

 private:
  std::set<std::string, std::less<>> names_;
};

}  // namespace tether::client
