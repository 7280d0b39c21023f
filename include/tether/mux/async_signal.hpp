#pragma once
// A one-waiter wake-up for coroutines on a single-threaded executor: notify() before or
// during wait() makes wait() return. Built on a timer that never expires, so an idle waiter
// costs one timer operation and no coroutine frame of its own.

#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "tether/mux/use_tuple.hpp"

namespace tether::mux {

class async_signal {
 public:
  explicit async_signal(const asio::any_io_executor& ex)
      : timer_(ex, asio::steady_timer::time_point::max()) {}

  /// Wakes the waiter, or the next wait() if nobody waits now.
  void notify() {
    if (timer_.cancel() == 0) pending_ = true;
  }

  /// Completes after a notify(), or when the awaiting coroutine is cancelled. Wake-ups may
  /// be spurious: callers re-check their condition.
  auto wait() {
    // An already-expired timer completes at once: that is the remembered notify().
    timer_.expires_at(pending_ ? asio::steady_timer::time_point::min()
                               : asio::steady_timer::time_point::max());
    pending_ = false;
    return timer_.async_wait(use_tuple);
  }

 private:
  asio::steady_timer timer_;
  bool pending_ = false;
};

}  // namespace tether::mux
