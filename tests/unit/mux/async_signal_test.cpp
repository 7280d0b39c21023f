#include "tether/mux/async_signal.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>

namespace tether::mux {
namespace {

using namespace std::chrono_literals;

// Runs `body` (a coroutine factory) on a fresh io_context; returns whether it finished.
template <class F>
bool run(asio::io_context& io, F body) {
  bool done = false;
  std::exception_ptr failure;
  asio::co_spawn(io, body(), [&](std::exception_ptr e) {
    done = true;
    failure = e;
  });
  io.run_for(10s);
  if (failure) std::rethrow_exception(failure);
  return done;
}

TEST(AsyncSignal, NotifyBeforeWaitIsRemembered) {
  asio::io_context io;
  async_signal s;
  s.notify();
  s.notify();  // folds into the first
  std::optional<asio::error_code> first;
  EXPECT_TRUE(run(io, [&]() -> asio::awaitable<void> {
    auto [ec] = co_await s.wait();
    first = ec;
  }));
  ASSERT_TRUE(first);
  EXPECT_FALSE(*first);
  // Both notifications were consumed by that one wait: a second wait blocks.
  io.restart();
  bool second = false;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    co_await s.wait();
    second = true;
  }, [](std::exception_ptr) {});
  io.run_for(50ms);
  EXPECT_FALSE(second);
  s.notify();
  io.run_for(1s);
  EXPECT_TRUE(second);
}

TEST(AsyncSignal, NotifyWakesAWaitingCoroutineThroughTheExecutor) {
  asio::io_context io;
  async_signal s;
  int stage = 0;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    stage = 1;
    co_await s.wait();
    stage = 2;
  }, [](std::exception_ptr) {});
  io.run_for(20ms);
  ASSERT_EQ(stage, 1);
  s.notify();
  EXPECT_EQ(stage, 1) << "the waiter must be resumed by the executor, not inside notify()";
  io.run_for(1s);
  EXPECT_EQ(stage, 2);
}

TEST(AsyncSignal, TheOtherSideOfAnOrCancelsTheWait) {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context io;
  async_signal s;
  std::size_t winner = 99;
  EXPECT_TRUE(run(io, [&]() -> asio::awaitable<void> {
    asio::steady_timer t(io, 10ms);
    auto woke = co_await (s.wait() || t.async_wait(use_tuple));
    winner = woke.index();
  }));
  EXPECT_EQ(winner, 1u);
  // The cancelled wait left nothing behind: the signal still works.
  io.restart();
  s.notify();
  EXPECT_TRUE(run(io, [&]() -> asio::awaitable<void> { co_await s.wait(); }));
}

TEST(AsyncSignal, CallbacksRunOnTheirExecutorAfterNotify) {
  asio::io_context io;
  async_signal s;
  int calls = 0;
  s.on_notify(io.get_executor(), [&] { ++calls; });
  io.run_for(20ms);
  EXPECT_EQ(calls, 0);
  s.notify();
  EXPECT_EQ(calls, 0);
  io.restart();
  io.run_for(100ms);
  EXPECT_EQ(calls, 1);
  s.notify();  // remembered for the next waiter; the callback was one-shot
  io.restart();
  io.run_for(20ms);
  EXPECT_EQ(calls, 1);
  s.on_notify(io.get_executor(), [&] { ++calls; });
  io.restart();
  io.run_for(100ms);
  EXPECT_EQ(calls, 2);
}

TEST(AsyncSignal, DestroyingTheSignalAbortsItsWaiter) {
  asio::io_context io;
  auto s = std::make_unique<async_signal>();
  std::optional<asio::error_code> got;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto [ec] = co_await s->wait();
    got = ec;
  }, [](std::exception_ptr) {});
  io.run_for(20ms);
  ASSERT_FALSE(got);
  s.reset();
  io.restart();
  io.run_for(1s);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, asio::error::operation_aborted);
}

}  // namespace
}  // namespace tether::mux
