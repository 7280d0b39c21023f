#include "tether/server/limit_books.hpp"

#include <algorithm>

namespace tether::server {

std::uint32_t limit_books::tally::operator[](const std::string& key) const {
  const auto it = counts_.find(key);
  return it == counts_.end() ? 0 : it->second;
}

void limit_books::tally::remove(const std::string& key) {
  const auto it = counts_.find(key);
  if (it != counts_.end() && --it->second == 0) counts_.erase(it);
}

std::string limit_books::begin_handshake(const std::string& source, const server_limits& limits,
                                         clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (auth_blocked(source, limits, now))
    return "max_auth_failures_per_source (" + std::to_string(limits.max_auth_failures_per_source) +
           " within " + std::to_string(limits.auth_failure_window.count()) + " ms) reached";
  if (pending_handshakes_ >= limits.max_pending_handshakes)
    return "max_pending_handshakes (" + std::to_string(limits.max_pending_handshakes) + ") reached";
  if (pending_by_source_[source] >= limits.max_pending_handshakes_per_source)
    return "max_pending_handshakes_per_source (" +
           std::to_string(limits.max_pending_handshakes_per_source) + ") reached";
  ++pending_handshakes_;
  pending_by_source_.add(source);
  return {};
}

void limit_books::end_handshake(const std::string& source) {
  std::lock_guard lock(mutex_);
  --pending_handshakes_;
  pending_by_source_.remove(source);
}

bool limit_books::auth_blocked(const std::string& source, const server_limits& limits,
                               clock::time_point now) {
  const auto it = auth_failures_by_source_.find(source);
  if (it == auth_failures_by_source_.end()) return false;
  if (now - it->second.window_start >= limits.auth_failure_window) {
    auth_failures_by_source_.erase(it);
    return false;
  }
  return it->second.count >= limits.max_auth_failures_per_source;
}

void limit_books::note_auth_failure(const std::string& source, const server_limits& limits,
                                    clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (auth_failures_by_source_.size() >= max_auth_sources &&
      !auth_failures_by_source_.contains(source)) {
    if (now - last_auth_prune_ < std::chrono::seconds(1)) return;
    last_auth_prune_ = now;
    std::erase_if(auth_failures_by_source_, [&](const auto& kv) {
      return now - kv.second.window_start >= limits.auth_failure_window;
    });
    if (auth_failures_by_source_.size() >= max_auth_sources) return;
  }
  auto& f = auth_failures_by_source_[source];
  if (f.count == 0 || now - f.window_start >= limits.auth_failure_window) f = {0, now};
  ++f.count;
}

std::string limit_books::begin_session(const std::string& source, const std::string& credential,
                                       const server_limits& limits) {
  std::lock_guard lock(mutex_);
  if (sessions_by_credential_[credential] >= limits.max_sessions_per_credential)
    return "max_sessions_per_credential (" + std::to_string(limits.max_sessions_per_credential) +
           ") reached for credential '" + credential + "'";
  if (sessions_by_source_[source] >= limits.max_sessions_per_source)
    return "max_sessions_per_source (" + std::to_string(limits.max_sessions_per_source) +
           ") reached for " + source;
  sessions_by_credential_.add(credential);
  sessions_by_source_.add(source);
  return {};
}

void limit_books::end_session(const std::string& source, const std::string& credential) {
  std::lock_guard lock(mutex_);
  sessions_by_credential_.remove(credential);
  sessions_by_source_.remove(source);
}

std::string limit_books::begin_stream(const std::string& credential, const server_limits& limits) {
  std::lock_guard lock(mutex_);
  if (streams_ >= limits.max_streams)
    return "max_streams (" + std::to_string(limits.max_streams) + ") reached on the server";
  if (streams_by_credential_[credential] >= limits.max_streams_per_credential)
    return "max_streams_per_credential (" + std::to_string(limits.max_streams_per_credential) +
           ") reached for credential '" + credential + "'";
  ++streams_;
  streams_by_credential_.add(credential);
  return {};
}

std::uint32_t limit_books::end_stream(const std::string& credential) {
  std::lock_guard lock(mutex_);
  --streams_;
  streams_by_credential_.remove(credential);
  return streams_;
}

std::uint32_t limit_books::streams() const {
  std::lock_guard lock(mutex_);
  return streams_;
}

std::uint32_t limit_books::pending_handshakes() const {
  std::lock_guard lock(mutex_);
  return pending_handshakes_;
}

std::uint32_t limit_books::sessions_of_credential(const std::string& credential) const {
  std::lock_guard lock(mutex_);
  return sessions_by_credential_[credential];
}

}  // namespace tether::server
