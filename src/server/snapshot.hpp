#pragma once
// Read-mostly state shared by every worker (the config, credentials, TLS context): never
// changed in place, replaced whole on reload. A reader takes the current version and keeps
// it as long as it needs a consistent view (a handshake, a stream's setup); a reload that
// comes meanwhile affects only what starts after it.
//
// The mutex is held only to copy or swap a shared_ptr (a few nanoseconds, at session and
// stream setup, never per byte). std::atomic<std::shared_ptr> would do the same job, but a
// plain mutex is what ThreadSanitizer and every compiler we build with understand.

#include <memory>
#include <mutex>

namespace tether::server {

template <typename T>
class snapshot {
 public:
  explicit snapshot(std::shared_ptr<const T> first) : current_(std::move(first)) {}

  /// The current version. Thread-safe.
  std::shared_ptr<const T> load() const {
    std::lock_guard lock(mutex_);
    return current_;
  }

  /// Replaces the current version; readers holding the old one keep it until they let go.
  /// Thread-safe.
  void store(std::shared_ptr<const T> next) {
    std::unique_lock lock(mutex_);
    current_.swap(next);
    lock.unlock();  // the old version may be freed here: not under the lock
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const T> current_;
};

}  // namespace tether::server
