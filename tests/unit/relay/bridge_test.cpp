// relay::bridge between two channels whose sessions run on two threads, as a client's
// stream and an agent's stream may on the server's workers (docs/AGENTS.md).

#include "tether/relay/bridge.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/use_future.hpp>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "../mux/memory_pipe.hpp"
#include "tether/mux/session.hpp"

namespace tether::relay {
namespace {

using mux::channel;
using mux::session;

// One event loop on a thread of its own, with a session pair on it whose client opens one
// stream: `near` is the opener's end, `far` the accepting end.
class loop_with_stream {
 public:
  loop_with_stream() : work_(io_.get_executor()), thread_([this] { io_.run(); }) {
    run([this]() -> asio::awaitable<void> {
      auto pipe = mux::testing::make_bounded_pipe(io_.get_executor(), 0);
      opener_ = session::make(std::move(pipe.a), {});
      acceptor_ = session::make(std::move(pipe.b), {});
      auto self = this;
      asio::co_spawn(io_,
                     acceptor_->start_server(
                         [](wire::role, std::string_view, std::string&) { return errc::ok; },
                         [self](mux::incoming_stream in) { self->far_ = in.accept(); }),
                     [](std::exception_ptr, asio::error_code) {});
      std::string message;
      const auto ec = co_await opener_->start_client("t", wire::role::client, {}, message);
      EXPECT_FALSE(ec) << ec.message();
      // Named first: g++ 12 destroys a braced temporary's string twice inside co_await.
      mux::target t{"dev", 1, mux::protocol::tcp};
      auto opened = co_await opener_->open(std::move(t));
      EXPECT_FALSE(opened.first) << opened.first.message();
      near_ = std::move(opened.second);
    });
  }

  ~loop_with_stream() {
    run([this]() -> asio::awaitable<void> {
      near_.reset();
      far_.reset();
      opener_->close();
      acceptor_->close();
      co_return;
    });
    work_.reset();
    thread_.join();
  }

  // Runs `f` on this loop and waits for it.
  template <typename F>
  void run(F f) {
    asio::co_spawn(io_, f(), asio::use_future).get();
  }

  asio::any_io_executor executor() { return io_.get_executor(); }
  asio::io_context& io() { return io_; }
  channel& near() { return *near_; }
  channel& far() { return *far_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::shared_ptr<session> opener_, acceptor_;
  std::unique_ptr<channel> near_, far_;
  std::thread thread_;
};

asio::awaitable<void> send_then_eof(channel& ch, std::vector<std::byte> data) {
  std::span<const std::byte> left(data);
  while (!left.empty()) {
    auto [cec, credit] = co_await ch.wait_send_credit();
    EXPECT_FALSE(cec) << cec.message();
    if (cec) co_return;
    const auto n = std::min(credit, left.size());
    EXPECT_FALSE(co_await ch.send(left.first(n)));
    left = left.subspan(n);
  }
  EXPECT_FALSE(co_await ch.send_eof());
}

asio::awaitable<std::vector<std::byte>> read_to_eof(channel& ch) {
  std::vector<std::byte> got;
  for (;;) {
    auto [ec, bytes] = co_await ch.receive();
    EXPECT_FALSE(ec) << ec.message();
    if (ec || bytes.empty()) co_return got;
    got.insert(got.end(), bytes.begin(), bytes.end());
    ch.consumed(bytes.size());
  }
}

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 r(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(r());
  return v;
}

TEST(Bridge, BytesAndHalfClosesCrossTwoThreadsBothWays) {
  loop_with_stream a;  // the client's side: a.far() is the client's end of its stream
  loop_with_stream b;  // the agent's side: b.far() is the agent's end
  const auto up = random_bytes(5 * 1024 * 1024 + 3, 1);  // more than a stream window
  const auto down = random_bytes(3 * 1024 * 1024 + 7, 2);

  auto bridged = asio::co_spawn(
      a.io(), bridge({a.near(), a.executor()}, {b.near(), b.executor()}, false), asio::use_future);
  auto sent_up = asio::co_spawn(a.io(), send_then_eof(a.far(), up), asio::use_future);
  auto got_up = asio::co_spawn(b.io(), read_to_eof(b.far()), asio::use_future);
  // The agent answers only after the client's half-close has arrived: the other way is
  // still open then.
  EXPECT_EQ(got_up.get(), up);
  auto sent_down = asio::co_spawn(b.io(), send_then_eof(b.far(), down), asio::use_future);
  auto got_down = asio::co_spawn(a.io(), read_to_eof(a.far()), asio::use_future);
  EXPECT_EQ(got_down.get(), down);
  sent_up.get();
  sent_down.get();
  const auto r = bridged.get();
  EXPECT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.a_to_b, up.size());
  EXPECT_EQ(r.b_to_a, down.size());
}

TEST(Bridge, AResetOnOneSideResetsTheOtherWithItsReason) {
  loop_with_stream a;
  loop_with_stream b;
  auto bridged = asio::co_spawn(
      a.io(), bridge({a.near(), a.executor()}, {b.near(), b.executor()}, false), asio::use_future);
  b.run([&]() -> asio::awaitable<void> {
    b.far().reset(errc::refused);
    co_return;
  });
  std::promise<asio::error_code> seen;
  a.run([&]() -> asio::awaitable<void> {
    auto [ec, bytes] = co_await a.far().receive();
    seen.set_value(ec);
  });
  EXPECT_EQ(seen.get_future().get(), make_error_code(errc::refused));
  EXPECT_TRUE(bridged.get().error);
}

}  // namespace
}  // namespace tether::relay
