#pragma once
// A line that a flood could repeat thousands of times a second (a refused connection, a
// failed accept, a connection dropped before its session began) is logged at most once a
// second; the lines left out are counted and the next line says how many. Thread-safe: workers share one per kind of warning, so the
// once-a-second bound holds for the whole server.

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace tether::server {

class rate_limited_log {
 public:
  explicit rate_limited_log(std::chrono::milliseconds interval = std::chrono::seconds(1))
      : interval_(interval) {}

  template <typename... Args>
  void warn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
    log(spdlog::level::warn, fmt, std::forward<Args>(args)...);
  }

  template <typename... Args>
  void info(spdlog::format_string_t<Args...> fmt, Args&&... args) {
    log(spdlog::level::info, fmt, std::forward<Args>(args)...);
  }

 private:
  template <typename... Args>
  void log(spdlog::level::level_enum level, spdlog::format_string_t<Args...> fmt,
           Args&&... args) {
    if (!spdlog::should_log(level)) return;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mutex_);
    if (logged_once_ && now - last_ < interval_) {
      ++suppressed_;
      return;
    }
    const auto text = fmt::format(fmt, std::forward<Args>(args)...);
    if (suppressed_ > 0)
      spdlog::log(level, "{} ({} more like this not logged)", text, suppressed_);
    else
      spdlog::log(level, "{}", text);
    suppressed_ = 0;
    last_ = now;
    logged_once_ = true;
  }

  std::chrono::milliseconds interval_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_once_ = false;
  std::uint64_t suppressed_ = 0;
};

}  // namespace tether::server
