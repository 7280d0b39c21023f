#pragma once
// The devices this server knows, by id. Built once from the config, then read-only, so
// lookups from many sessions need no lock.

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tether::server {

struct device {
  std::string id;       // [A-Za-z0-9._-]{1,64}
  std::string address;  // host name or IP literal (IPv6 without brackets) the server dials
  // Reached through the session its agent keeps open (docs/AGENTS.md), never dialed: it
  // has no address.
  bool agent = false;
};

/// True for ids of 1 to 64 characters from [A-Za-z0-9._-].
bool is_valid_device_id(std::string_view id) noexcept;

class registry {
 public:
  registry() = default;
  /// Throws std::invalid_argument on a duplicate id (the config loader rejects those first
  /// with a better message; this guards other callers).
  explicit registry(std::vector<device> devices);

  /// The device with exactly this id, or nullptr. The pointer stays valid as long as the
  /// registry. Const and thread-safe.
  const device* find(std::string_view id) const;

  std::size_t size() const noexcept { return devices_.size(); }

  /// Calls `f` with each device, in id order.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [id, d] : devices_) f(d);
  }

 private:
  std::map<std::string, device, std::less<>> devices_;
};

}  // namespace tether::server
