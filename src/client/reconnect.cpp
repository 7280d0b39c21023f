#include "tether/client/reconnect.hpp"

#include <algorithm>

namespace tether::client {

reconnect_policy::reconnect_policy(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                                   std::optional<std::size_t> retries)
    : initial_(initial), max_(max), retries_(retries), backoff_(initial) {}

bool reconnect_policy::is_fatal(const dial_outcome& o) noexcept {
  return o.kind == dial_outcome::failure::bad_credentials ||
         o.kind == dial_outcome::failure::untrusted_server ||
         o.kind == dial_outcome::failure::fatal;
}

std::chrono::milliseconds reconnect_policy::next_delay() {
  const auto d = backoff_;
  backoff_ = std::min(backoff_ * 2, max_);
  std::uniform_int_distribution<long> dist(d.count() / 2, d.count());
  return std::chrono::milliseconds(dist(jitter_));
}

bool reconnect_policy::may_retry() noexcept {
  ++failures_in_row_;
  if (!retries_) return ever_connected_;
  return *retries_ == retry_forever || failures_in_row_ <= *retries_;
}

void reconnect_policy::connected() noexcept {
  failures_in_row_ = 0;
  ever_connected_ = true;
  backoff_ = initial_;
}

}  // namespace tether::client
