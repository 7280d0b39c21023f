#pragma once
// A test fixture that drives one io_context from the test body: start a coroutine, run until
// a condition holds (with a deadline), or run until nothing is left to do right now. Also
// sets up a session facing a raw frame_peer, past the handshake.

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frame_peer.hpp"
#include "memory_pipe.hpp"
#include "tether/mux/session.hpp"

namespace tether::mux::testing {

using namespace std::chrono_literals;

inline constexpr std::size_t read_batch = 256 * 1024;  // the most one read of the session takes

class session_fixture : public ::testing::Test {
 protected:
  asio::io_context io;

  asio::any_io_executor ex() { return io.get_executor(); }

  // Starts `a`; its result is set when it completes. An exception fails the test.
  template <class T>
  std::shared_ptr<std::optional<T>> start(asio::awaitable<T> a) {
    auto out = std::make_shared<std::optional<T>>();
    asio::co_spawn(io, std::move(a), [out](std::exception_ptr e, T v) {
      if (e) return record(e);
      *out = std::move(v);
    });
    return out;
  }
  std::shared_ptr<bool> start(asio::awaitable<void> a) {
    auto done = std::make_shared<bool>(false);
    asio::co_spawn(io, std::move(a), [done](std::exception_ptr e) {
      if (e) return record(e);
      *done = true;
    });
    return done;
  }

  // Runs handlers until `done()` holds or `limit` has passed. Returns done().
  template <class Pred>
  bool run_until(Pred done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io.restart();
      io.run_one_for(10ms);
    }
    return done();
  }

  // Runs every handler that is ready, until none is: everything that can happen without a
  // timer expiring has happened. False, and a failure that says why, if that does not come
  // within `limit` or `max_handlers` handlers (something spins, or a peer that should be
  // stopped keeps going). One handler at a time: io.poll() would never return while a
  // handler keeps posting itself, and the bug would show as a hang.
  bool settle(std::chrono::milliseconds limit = 10s, std::size_t max_handlers = 10'000'000) {
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t n = 0; n < max_handlers; ++n) {
      io.restart();
      if (io.poll_one() == 0) return true;
      if (std::chrono::steady_clock::now() - start >= limit) {
        ADD_FAILURE() << "settle(): still busy after " << limit.count() << " ms and " << n + 1
                      << " handlers";
        return false;
      }
    }
    ADD_FAILURE() << "settle(): " << max_handlers
                  << " handlers ran and more are ready: something keeps posting itself";
    return false;
  }

  // A session facing a raw peer, past the handshake.
  struct facing_raw {
    std::shared_ptr<session> s;
    std::shared_ptr<frame_peer> raw;
    std::shared_ptr<pipe_half_state> to_session, to_raw;  // the pipe's two directions
  };

  static wire::hello client_hello(std::uint32_t session_window = 16u << 20,
                                  std::uint32_t stream_window = 2u << 20) {
    return wire::hello{wire::protocol_version, wire::role::client, session_window, stream_window,
                       "good"};
  }

  // A server session; the raw client has sent `hello` and read WELCOME (its only frame so
  // far in raw->frames()). The pipe holds `capacity` bytes per direction (0: no limit).
  facing_raw serve(session_settings settings, session::open_handler on_open,
                   wire::hello hello = client_hello(), std::size_t capacity = 0) {
    auto pipe = make_bounded_pipe(ex(), capacity);
    facing_raw out{track(session::make(std::move(pipe.a), settings)),
                   track(frame_peer::make(std::move(pipe.b))), pipe.b_to_a, pipe.a_to_b};
    auto started = start(out.s->start_server(
        [](wire::role, std::string_view, std::string&) { return errc::ok; }, std::move(on_open)));
    out.raw->send(hello);
    out.raw->read_next();
    EXPECT_TRUE(run_until([&] { return started->has_value() && !out.raw->frames().empty(); }))
        << "no handshake";
    if (started->has_value()) {
      EXPECT_FALSE(started->value()) << started->value().message();
    }
    if (!out.raw->frames().empty()) {
      EXPECT_TRUE(out.raw->frames().front().as<wire::welcome>()) << "expected WELCOME";
    }
    return out;
  }

  // A client session; the raw server has read HELLO (its only frame so far in
  // raw->frames()) and answered `welcome`.
  facing_raw dial(session_settings settings, wire::welcome welcome, std::size_t capacity = 0) {
    auto pipe = make_bounded_pipe(ex(), capacity);
    facing_raw out{track(session::make(std::move(pipe.a), settings)),
                   track(frame_peer::make(std::move(pipe.b))), pipe.b_to_a, pipe.a_to_b};
    auto started = start(out.s->start_client("good", wire::role::client, {}, client_message_));
    out.raw->read_next();
    EXPECT_TRUE(run_until([&] { return !out.raw->frames().empty(); })) << "no HELLO";
    out.raw->send(welcome);
    EXPECT_TRUE(run_until([&] { return started->has_value(); })) << "no handshake";
    if (started->has_value()) {
      EXPECT_FALSE(started->value()) << started->value().message();
    }
    return out;
  }

  struct session_pair {
    std::shared_ptr<session> client, server;
  };

  // A client and a server session over one pipe, past the handshake.
  session_pair connect_pair(session_settings settings, session::open_handler on_open) {
    return connect_pair(settings, settings, std::move(on_open));
  }

  // The same with settings of each side's own.
  session_pair connect_pair(session_settings client_settings, session_settings server_settings,
                            session::open_handler on_open) {
    auto pipe = make_bounded_pipe(ex(), 0);
    session_pair out{track(session::make(std::move(pipe.a), client_settings)),
                     track(session::make(std::move(pipe.b), server_settings))};
    auto served = start(out.server->start_server(
        [](wire::role, std::string_view, std::string&) { return errc::ok; }, std::move(on_open)));
    auto dialed = start(out.client->start_client("good", wire::role::client, {}, client_message_));
    EXPECT_TRUE(run_until([&] { return served->has_value() && dialed->has_value(); }))
        << "no handshake";
    if (served->has_value() && dialed->has_value()) {
      EXPECT_FALSE(served->value()) << served->value().message();
      EXPECT_FALSE(dialed->value()) << dialed->value().message();
    }
    return out;
  }

  void TearDown() override {
    for (auto& s : sessions_) s->close();
    for (auto& p : peers_) p->close();
    settle();
    sessions_.clear();
    peers_.clear();
  }

  // Closed at the end of the test, and the loop run until everything has wound down.
  std::shared_ptr<session> track(std::shared_ptr<session> s) {
    sessions_.push_back(s);
    return s;
  }
  std::shared_ptr<frame_peer> track(std::shared_ptr<frame_peer> p) {
    peers_.push_back(p);
    return p;
  }

 private:
  static void record(std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      ADD_FAILURE() << "a coroutine of the test threw: " << x.what();
    }
  }

  std::string client_message_;
  std::vector<std::shared_ptr<session>> sessions_;
  std::vector<std::shared_ptr<frame_peer>> peers_;
};

// Accepts the stream and echoes it back, byte for byte, including the FIN.
inline void echo(incoming_stream in, asio::any_io_executor ex) {
  auto ch = in.accept();
  asio::co_spawn(
      ex,
      [ch = std::move(ch)]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, bytes] = co_await ch->receive();
          if (ec) co_return;
          if (bytes.empty()) {
            co_await ch->send_eof();
            co_return;
          }
          std::vector<std::byte> copy(bytes.begin(), bytes.end());
          ch->consumed(bytes.size());
          std::span<const std::byte> rest(copy);
          while (!rest.empty()) {
            auto [cec, credit] = co_await ch->wait_send_credit();
            if (cec) co_return;
            const auto n = std::min(credit, rest.size());
            if (co_await ch->send(rest.first(n))) co_return;
            rest = rest.subspan(n);
          }
        }
      },
      asio::detached);
}

// Sends all of `data` on `ch`; throws on failure.
inline asio::awaitable<void> send_all(channel& ch, std::span<const std::byte> data) {
  while (!data.empty()) {
    auto [ec, credit] = co_await ch.wait_send_credit();
    if (ec) throw std::system_error(ec, "wait_send_credit");
    const auto n = std::min(credit, data.size());
    if (auto sec = co_await ch.send(data.first(n))) throw std::system_error(sec, "send");
    data = data.subspan(n);
  }
}

// Reads `ch` to its end: the bytes, and the error that ended it (none at a FIN).
inline asio::awaitable<std::pair<asio::error_code, std::string>> receive_all(channel& ch) {
  std::string out;
  for (;;) {
    auto [ec, bytes] = co_await ch.receive();
    if (ec || bytes.empty()) co_return std::pair{ec, out};
    out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    ch.consumed(bytes.size());
  }
}

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Sends `text` and a FIN on `ch`, and reads what comes back to its end.
inline asio::awaitable<std::pair<asio::error_code, std::string>> echo_round(channel& ch,
                                                                            std::string text) {
  co_await send_all(ch, as_bytes(text));
  if (auto ec = co_await ch.send_eof()) co_return std::pair{ec, std::string()};
  co_return co_await receive_all(ch);
}

}  // namespace tether::mux::testing
