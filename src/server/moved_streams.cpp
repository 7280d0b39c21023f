#include "tether/server/moved_streams.hpp"

#include <algorithm>

namespace tether::server {

moved_streams::moved_streams(std::size_t capacity, std::chrono::milliseconds ttl,
                             std::size_t per_credential)
    : capacity_(capacity), per_credential_(per_credential), ttl_(ttl) {}

bool moved_streams::park(const wire::move_token& token, parked_stream s) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  expire_locked(now);
  if (parked_.size() >= capacity_ || parked_.count(token)) return false;
  const auto& who = s.credential;
  const auto theirs = std::count_if(parked_.begin(), parked_.end(),
                                    [&](const auto& kv) { return kv.second.stream.credential == who; });
  if (static_cast<std::size_t>(theirs) >= per_credential_) return false;
  parked_.emplace(token, entry{std::move(s), now + ttl_});
  return true;
}

std::optional<parked_stream> moved_streams::claim(const wire::move_token& token,
                                                  std::string_view credential) {
  std::optional<parked_stream> out;
  std::lock_guard lock(mutex_);
  expire_locked(std::chrono::steady_clock::now());
  const auto it = parked_.find(token);
  if (it == parked_.end() || it->second.stream.credential != credential) return out;
  out.emplace(std::move(it->second.stream));
  parked_.erase(it);
  return out;
}

std::size_t moved_streams::expire() {
  std::lock_guard lock(mutex_);
  return expire_locked(std::chrono::steady_clock::now());
}

std::size_t moved_streams::clear() {
  std::lock_guard lock(mutex_);
  const auto n = parked_.size();
  parked_.clear();
  return n;
}

std::size_t moved_streams::size() const {
  std::lock_guard lock(mutex_);
  return parked_.size();
}

std::size_t moved_streams::expire_locked(std::chrono::steady_clock::time_point now) {
  return std::erase_if(parked_, [now](const auto& kv) { return kv.second.deadline <= now; });
}

}  // namespace tether::server
