#include "tether/server/registry.hpp"

#include <stdexcept>

namespace tether::server {

bool is_valid_device_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

registry::registry(std::vector<device> devices) {
  for (auto& d : devices) {
    if (devices_.contains(d.id)) throw std::invalid_argument("duplicate device id '" + d.id + "'");
    std::string id = d.id;
    devices_.emplace(std::move(id), std::move(d));
  }
}

const device* registry::find(std::string_view id) const {
  auto it = devices_.find(id);
  return it == devices_.end() ? nullptr : &it->second;
}

}  // namespace tether::server
