#include "tether/client/reload_plan.hpp"

#include <algorithm>

namespace tether::client {

bool reload_plan::empty() const {
  return stop.empty() && start.empty() &&
         std::all_of(keep.begin(), keep.end(),
                     [](const kept_server& k) { return k.remove.empty() && k.add.empty(); });
}

reload_plan plan_reload(const std::vector<server_spec>& running,
                        const std::vector<server_spec>& next) {
  reload_plan plan;
  std::vector<bool> matched(running.size(), false);
  for (std::size_t n = 0; n < next.size(); ++n) {
    std::size_t r = 0;
    while (r < running.size() && (matched[r] || !(running[r].settings == next[n].settings))) ++r;
    if (r == running.size()) {
      plan.start.push_back(n);
      continue;
    }
    matched[r] = true;
    reload_plan::kept_server k{r, n, {}, {}};
    const auto& before = running[r].tunnels;
    const auto& after = next[n].tunnels;
    for (std::size_t i = 0; i < before.size(); ++i) {
      const bool stays = std::any_of(after.begin(), after.end(),
                                     [&](const tunnel_spec& a) { return a.same_as(before[i]); });
      if (!stays) k.remove.push_back(i);
    }
    for (const auto& t : after) {
      const bool runs = std::any_of(before.begin(), before.end(),
                                    [&](const tunnel_spec& b) { return b.same_as(t); });
      if (!runs) k.add.push_back(t);
    }
    plan.keep.push_back(std::move(k));
  }
  for (std::size_t r = 0; r < running.size(); ++r)
    if (!matched[r]) plan.stop.push_back(r);
  return plan;
}

}  // namespace tether::client
