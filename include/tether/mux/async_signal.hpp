#pragma once
// A one-waiter wake-up for coroutines on a single-threaded executor: notify() before or
// during wait() makes wait() return. Built on a channel with room for one message, which
// completes waiters by posting to the executor: no timer, so no timerfd system call per
// wake-up (a timer re-armed on every wait cost a third of a busy relay's system calls).

#include <asio/awaitable.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/use_awaitable.hpp>

#include "tether/mux/use_tuple.hpp"

namespace tether::mux {

class async_signal {
 public:
  explicit async_signal(const asio::any_io_executor& ex) : channel_(ex, 1) {}

  /// Wakes the waiter, or the next wait() if nobody waits now. Notifications that arrive
  /// before the waiter runs fold into one.
  void notify() { channel_.try_send(asio::error_code{}, true); }

  /// Completes after a notify(), or when the awaiting coroutine is cancelled. Wake-ups may
  /// be spurious: callers re-check their condition.
  auto wait() { return channel_.async_receive(use_tuple); }

 private:
  asio::experimental::channel<void(asio::error_code, bool)> channel_;
};

}  // namespace tether::mux
