#include "tether/server/agent_directory.hpp"

#include <algorithm>
#include <utility>

namespace tether::server {

std::shared_ptr<const agent_link> agent_directory::attach(std::shared_ptr<const agent_link> link) {
  agent_event e{agent_event::kind::online, link->device, link->peer};
  {
    std::lock_guard lock(mutex_);
    auto& slot = devices_[link->device];
    if (slot.online) return slot.online;
    slot.online = std::move(link);
  }
  notify(e);
  return nullptr;
}

void agent_directory::detach(const std::shared_ptr<const agent_link>& link) {
  {
    std::lock_guard lock(mutex_);
    const auto it = devices_.find(link->device);
    if (it == devices_.end() || it->second.online != link) return;  // replaced meanwhile
    it->second.online.reset();
    it->second.last_seen = std::chrono::system_clock::now();
  }
  notify({agent_event::kind::offline, link->device, link->peer});
}

agent_directory::lookup agent_directory::find(std::string_view device) const {
  std::lock_guard lock(mutex_);
  const auto it = devices_.find(device);
  if (it == devices_.end()) return {};
  return {it->second.online, it->second.last_seen};
}

std::vector<std::shared_ptr<const agent_link>> agent_directory::online() const {
  std::vector<std::shared_ptr<const agent_link>> out;
  std::lock_guard lock(mutex_);
  for (const auto& [id, e] : devices_)
    if (e.online) out.push_back(e.online);
  return out;
}

std::string offline_message(std::string_view device,
                            std::optional<std::chrono::system_clock::time_point> last_seen,
                            std::chrono::system_clock::time_point now) {
  std::string m = "device " + std::string(device) + " is offline (";
  if (!last_seen) return m + "its agent has not connected since the server started)";
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(now - *last_seen).count();
  std::string ago;
  if (s < 60)
    ago = std::to_string(std::max<long long>(s, 0)) + " s";
  else if (s < 3600)
    ago = std::to_string(s / 60) + " min";
  else if (s < 86400)
    ago = std::to_string(s / 3600) + " h";
  else
    ago = std::to_string(s / 86400) + " days";
  return m + "agent last seen " + ago + " ago)";
}

}  // namespace tether::server
