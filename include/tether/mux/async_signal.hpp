#pragma once
// A one-waiter wake-up for coroutines on a single-threaded executor: notify() before or
// during wait() makes wait() return. Built on a timer that never expires, so an idle waiter
// costs one timer and no thread.

#include "tether/mux/use_tuple.hpp"
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace tether::mux {

class async_signal {
 public:
  explicit async_signal(const asio::any_io_executor& ex)
      : timer_(ex, asio::steady_timer::time_point::max()) {}

  /// Wakes the waiter, or the next wait() if nobody waits now.
  void notify() {
    pending_ = true;
    timer_.cancel();
  }

  /// Returns after a notify() (also when the coroutine is cancelled: callers re-check state).
  asio::awaitable<void> wait() {
    if (!pending_) {
      timer_.expires_at(asio::steady_timer::time_point::max());
      co_await timer_.async_wait(use_tuple);
    }
    pending_ = false;
  }

 private:
  asio::steady_timer timer_;
  bool pending_ = false;
};

}  // namespace tether::mux
