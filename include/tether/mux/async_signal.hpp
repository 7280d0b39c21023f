#pragma once
// A one-waiter wake-up for coroutines and callbacks on a single-threaded executor:
// notify() before or during wait() makes wait() return. Waiters complete by a post to
// their own executor: no timer, so no timerfd system call per wake-up (a timer re-armed on
// every wait cost a third of a busy relay's system calls).
//
// Every stream owns two of these and idle streams are what there are most of, so a signal
// is a pointer and a flag; the waiter is allocated only while somebody waits. (An Asio
// channel did the same job in 152 bytes, plus a std::deque's ~600 bytes.)

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_executor.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <memory>
#include <utility>

#include "tether/mux/use_tuple.hpp"

namespace tether::mux {

class async_signal {
 public:
  async_signal() = default;
  async_signal(const async_signal&) = delete;
  async_signal& operator=(const async_signal&) = delete;
  /// A waiter still waiting completes with operation_aborted.
  ~async_signal() { complete(asio::error::operation_aborted); }

  /// Wakes the waiter, or the next wait() if nobody waits now. Notifications that arrive
  /// before the waiter runs fold into one.
  void notify() { wake(false); }

  /// notify() that resumes the waiter right here instead of posting it: for a completion
  /// handler that does nothing after this call, where a post would cost the event loop one
  /// more turn (an extra epoll_wait per wake-up).
  void notify_here() { wake(true); }

  /// Completes after a notify(), or with operation_aborted when the awaiting coroutine is
  /// cancelled. Wake-ups may be spurious: callers re-check their condition.
  auto wait() {
    return asio::async_initiate<decltype(use_tuple), void(asio::error_code)>(
        [this](auto handler) { start(std::move(handler)); }, use_tuple);
  }

  /// wait() for callers that are not coroutines: `f()` runs on `ex` after a notify().
  template <typename Executor, typename F>
  void on_notify(const Executor& ex, F f) {
    start(asio::bind_executor(ex, [f = std::move(f)](asio::error_code) mutable { f(); }));
  }

 private:
  struct waiter {
    virtual ~waiter() = default;
    /// Posts the handler with `ec`, or runs it now when `here`; deletes itself.
    virtual void complete(asio::error_code ec, bool here = false) = 0;
  };

  template <typename Handler>
  struct waiter_for final : waiter {
    explicit waiter_for(Handler h) : handler(std::move(h)) {}
    void complete(asio::error_code ec, bool here) override {
      Handler h = std::move(handler);
      delete this;
      auto slot = asio::get_associated_cancellation_slot(h);
      if (slot.is_connected()) slot.clear();
      if (here) return std::move(h)(ec);
      const auto ex = asio::get_associated_executor(h);
      asio::post(ex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
    }
    Handler handler;
  };

  // Installed in the waiter's cancellation slot (the `||` of awaitable operators uses it).
  struct canceller {
    async_signal* signal;
    void operator()(asio::cancellation_type) { signal->complete(asio::error::operation_aborted); }
  };

  template <typename Handler>
  void start(Handler handler) {
    complete(asio::error::operation_aborted);  // one waiter at a time
    auto slot = asio::get_associated_cancellation_slot(handler);
    waiter_ = new waiter_for<Handler>(std::move(handler));
    if (notified_) {
      notified_ = false;
      complete({});
      return;
    }
    if (slot.is_connected()) slot.template emplace<canceller>(canceller{this});
  }

  void wake(bool here) {
    if (auto* w = std::exchange(waiter_, nullptr))
      w->complete({}, here);
    else
      notified_ = true;
  }

  void complete(asio::error_code ec) {
    if (auto* w = std::exchange(waiter_, nullptr)) w->complete(ec);
  }

  waiter* waiter_ = nullptr;
  bool notified_ = false;
};

}  // namespace tether::mux
