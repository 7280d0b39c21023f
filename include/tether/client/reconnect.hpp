#pragma once
// When to dial again after a session could not be made or was lost: capped exponential
// backoff with jitter, and how many failed dials in a row are retried. `tether connect`,
// `up` and `agent` all reconnect by it.

#include <chrono>
#include <cstddef>
#include <optional>
#include <random>

#include "tether/client/dialer.hpp"

namespace tether::client {

/// A retry count that never gives up.
inline constexpr std::size_t retry_forever = static_cast<std::size_t>(-1);

class reconnect_policy {
 public:
  /// `retries`: failed dials in a row retried before giving up. Unset: none until a first
  /// session has been made (a mistake in the URL or the network shows at once), then
  /// without end.
  reconnect_policy(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                   std::optional<std::size_t> retries);

  /// A failure that retrying cannot fix: bad credentials, an untrusted server, a fatal one.
  static bool is_fatal(const dial_outcome& o) noexcept;

  /// The wait before the next dial: full jitter over [backoff/2, backoff], so many clients
  /// don't reconnect in lockstep; the backoff doubles up to the cap.
  std::chrono::milliseconds next_delay();

  /// Counts one more failed dial; whether the policy allows another attempt.
  bool may_retry() noexcept;

  /// A session was made: the backoff and the failure count start over.
  void connected() noexcept;

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::optional<std::size_t> retries_;
  std::chrono::milliseconds backoff_;
  std::size_t failures_in_row_ = 0;  // dials that failed since the last session was made
  bool ever_connected_ = false;
  std::minstd_rand jitter_{std::random_device{}()};
};

}  // namespace tether::client
