#include "tether/mux/session.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <numeric>
#include <optional>

#include "memory_pipe.hpp"
#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::make_pipe;

// Runs `body` on a fresh io_context until it finishes (with a safety bound).
template <class F>
void run(F body) {
  asio::io_context io;
  bool done = false;
  std::exception_ptr failure;
  asio::co_spawn(io, body(io.get_executor()), [&](std::exception_ptr e) {
    done = true;
    failure = e;
  });
  io.run_for(std::chrono::seconds(60));
  if (failure) std::rethrow_exception(failure);
  ASSERT_TRUE(done) << "test body did not finish";
}

struct pair_of_sessions {
  std::shared_ptr<session> client, server;
};

asio::awaitable<pair_of_sessions> connect(asio::any_io_executor ex, session_settings settings,
                                          session::open_handler on_open,
                                          std::string token = "good") {
  auto [a, b] = make_pipe(ex);
  pair_of_sessions s{session::make(std::move(a), settings), session::make(std::move(b), settings)};
  asio::co_spawn(
      ex,
      s.server->start_server(
          [](wire::role, std::string_view t, std::string&) { return t == "good" ? errc::ok : errc::bad_token; },
          std::move(on_open)),
      asio::detached);
  std::string message;
  auto ec = co_await s.client->start_client(token, wire::role::client, {}, message);
  if (ec) throw std::system_error(ec, message);
  co_return s;
}

// Server side of the tests: echoes every stream back, byte for byte, including the FIN;
// refuses streams to the device "nowhere".
void echo_streams(incoming_stream in, asio::any_io_executor ex) {
  if (in.target().device == "nowhere") return in.refuse(errc::unknown_device, "no such device");
  testing::echo(std::move(in), ex);
}

asio::awaitable<void> send_all_then_eof(channel& ch, std::span<const std::byte> data) {
  while (!data.empty()) {
    auto [ec, credit] = co_await ch.wait_send_credit();
    if (ec) throw std::system_error(ec);
    const auto n = std::min(credit, data.size());
    if (auto sec = co_await ch.send(data.first(n))) throw std::system_error(sec);
    data = data.subspan(n);
  }
  if (auto ec = co_await ch.send_eof()) throw std::system_error(ec);
}

asio::awaitable<std::vector<std::byte>> receive_all(channel& ch) {
  std::vector<std::byte> out;
  for (;;) {
    auto [ec, bytes] = co_await ch.receive();
    if (ec) throw std::system_error(ec);
    if (bytes.empty()) co_return out;
    out.insert(out.end(), bytes.begin(), bytes.end());
    ch.consumed(bytes.size());
  }
}

std::vector<std::byte> stream_pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte((i * 131 + seed * 7 + (i >> 11)) & 0xff);
  return v;
}

TEST(Session, EchoesManyStreamsWithSmallWindows) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    session_settings settings;
    settings.stream_window = 64 * 1024;  // forces many WINDOW_UPDATEs
    settings.session_window = 128 * 1024;
    auto s = co_await connect(ex, settings, [ex](incoming_stream in) { echo_streams(std::move(in), ex); });
    constexpr int streams = 8;
    int finished = 0;
    for (int i = 0; i < streams; ++i) {
      asio::co_spawn(
          ex,
          [&, i]() -> asio::awaitable<void> {
            target t{"dev-1", 22, protocol::tcp};  // named: g++ 12 double-destroys temporaries in co_await
            auto [ec, ch] = co_await s.client->open(t);
            EXPECT_FALSE(ec) << ec.message();
            if (ec) co_return;
            const auto data = stream_pattern(1 << 20, i);
            std::vector<std::byte> got;
            using namespace asio::experimental::awaitable_operators;
            co_await (send_all_then_eof(*ch, data) && [&, &ch = ch]() -> asio::awaitable<void> {
              got = co_await receive_all(*ch);
            }());
            EXPECT_TRUE(got == data) << "stream " << i;
            ++finished;
          },
          asio::detached);
    }
    asio::steady_timer t(ex);
    for (int i = 0; i < 600 && finished < streams; ++i) {
      t.expires_after(std::chrono::milliseconds(50));
      co_await t.async_wait(use_tuple);
    }
    EXPECT_EQ(finished, streams);
    EXPECT_EQ(s.server->stream_count(), 0u);
    EXPECT_EQ(s.client->stream_count(), 0u);
    s.client->close();
  });
}

// After send_eof() a stream takes no more bytes: DATA after our own FIN would be a protocol
// violation that ends the whole session at the peer. (Found by fuzz_session.)
TEST(Session, NothingIsSentAfterTheStreamsOwnFin) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto s = co_await connect(ex, {}, [ex](incoming_stream in) { echo_streams(std::move(in), ex); });
    target t{"dev-1", 22, protocol::tcp};
    auto [ec, ch] = co_await s.client->open(t);
    EXPECT_FALSE(ec) << ec.message();
    if (ec) co_return;
    const auto data = stream_pattern(1000, 7);
    co_await send_all_then_eof(*ch, data);  // ends with send_eof()
    auto [cec, credit] = co_await ch->wait_send_credit();
    EXPECT_EQ(cec, make_error_code(asio::error::shut_down));
    EXPECT_EQ(credit, 0u);
    const std::byte more[] = {std::byte{1}, std::byte{2}};
    EXPECT_EQ(co_await ch->send(more), make_error_code(asio::error::shut_down));
    // The echo comes back whole and ends with the peer's FIN: the session is intact.
    const auto got = co_await receive_all(*ch);
    EXPECT_TRUE(got == data);
    EXPECT_FALSE(s.client->closed());
    EXPECT_FALSE(s.server->closed());
    s.client->close();
  });
}

TEST(Session, RefusalCarriesItsReason) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto s = co_await connect(ex, {}, [ex](incoming_stream in) { echo_streams(std::move(in), ex); });
    target t{"nowhere", 22, protocol::tcp};
    auto [ec, ch] = co_await s.client->open(t);
    EXPECT_EQ(ec, make_error_code(errc::unknown_device));
    EXPECT_EQ(ch, nullptr);
    s.client->close();
  });
}

TEST(Session, BadTokenIsRefused) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    try {
      co_await connect(ex, {}, {}, "wrong");
      ADD_FAILURE() << "expected a refusal";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), make_error_code(errc::bad_token));
    }
  });
}

TEST(Session, StalledStreamDoesNotBlockAnother) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    session_settings settings;
    settings.stream_window = 64 * 1024;
    settings.session_window = 256 * 1024;
    std::vector<std::unique_ptr<channel>> held;  // accepted but never read: a stalled reader
    auto s = co_await connect(ex, settings, [&, ex](incoming_stream in) {
      if (in.target().device == "stalled")
        held.push_back(in.accept());
      else
        echo_streams(std::move(in), ex);
    });
    target t1{"stalled", 1, protocol::tcp};
    auto [ec1, stalled] = co_await s.client->open(t1);
    EXPECT_FALSE(ec1);
    // Fill the stalled stream's window completely.
    std::size_t sent = 0;
    const auto chunk = stream_pattern(16 * 1024, 1);
    for (;;) {
      using namespace asio::experimental::awaitable_operators;
      asio::steady_timer t(ex, std::chrono::milliseconds(200));
      auto r = co_await (stalled->wait_send_credit() || t.async_wait(use_tuple));
      if (r.index() == 1) break;  // no more credit: the window is full
      auto [ec, credit] = std::get<0>(r);
      EXPECT_FALSE(ec);
      const auto n = std::min(credit, chunk.size());
      co_await stalled->send(std::span(chunk).first(n));
      sent += n;
    }
    EXPECT_EQ(sent, 64u * 1024);
    // Another stream still moves 4 MiB both ways.
    target t2{"dev-2", 2, protocol::tcp};
    auto [ec2, other] = co_await s.client->open(t2);
    EXPECT_FALSE(ec2);
    const auto data = stream_pattern(4 << 20, 9);
    std::vector<std::byte> got;
    using namespace asio::experimental::awaitable_operators;
    co_await (send_all_then_eof(*other, data) && [&, &other = other]() -> asio::awaitable<void> {
      got = co_await receive_all(*other);
    }());
    EXPECT_TRUE(got == data);
    s.client->close();
  });
}

TEST(Session, GarbageEndsTheSessionWithAProtocolError) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto [a, b] = make_pipe(ex);
    auto server = session::make(std::move(b), {});
    const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    co_await a->write(asio::buffer(junk));
    auto ec = co_await server->start_server([](wire::role, std::string_view, std::string&) { return errc::ok; },
                                            {});
    EXPECT_TRUE(ec);
    EXPECT_TRUE(server->closed() || ec);
  });
}

// Reads a channel the way the relay's downlink does: try_receive() until it would block,
// then when_receivable() to be called back. Collects everything up to end-of-stream.
struct callback_reader {
  explicit callback_reader(channel& c) : ch(c) {}

  channel& ch;
  std::vector<std::byte> got;
  std::optional<asio::error_code> ended;  // set at end-of-stream (empty code) or failure
  int callbacks = 0;
  bool inside_pump = false;

  void pump() {
    EXPECT_FALSE(inside_pump) << "when_receivable() called back from inside the caller";
    inside_pump = true;
    for (;;) {
      auto [ec, bytes] = ch.try_receive();
      if (ec == asio::error::would_block) {
        ch.when_receivable([this] {
          ++callbacks;
          pump();
        });
        break;
      }
      if (ec || bytes.empty()) {
        ended = ec;
        break;
      }
      got.insert(got.end(), bytes.begin(), bytes.end());
      ch.consumed(bytes.size());
    }
    inside_pump = false;
  }
};

// Polls `done` every 10 ms for up to 5 s.
template <class Pred>
asio::awaitable<void> wait_until(asio::any_io_executor ex, Pred done) {
  asio::steady_timer t(ex);
  for (int i = 0; i < 500 && !done(); ++i) {
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(asio::use_awaitable);
  }
}

TEST(Session, CallbackReaderGetsEveryByteAndTheEnd) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    session_settings settings;
    settings.stream_window = 64 * 1024;  // the sender needs the reader's credit to finish
    settings.session_window = 128 * 1024;
    std::unique_ptr<channel> server_side;
    auto s = co_await connect(ex, settings,
                              [&](incoming_stream in) { server_side = in.accept(); });
    target t{"dev-1", 22, protocol::tcp};
    auto [ec, ch] = co_await s.client->open(t);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_TRUE(server_side);
    if (ec || !server_side) co_return s.client->close();

    callback_reader reader(*server_side);
    reader.pump();
    EXPECT_FALSE(reader.ended) << "nothing was sent yet";
    const auto data = stream_pattern(1 << 20, 3);
    co_await send_all_then_eof(*ch, data);  // ends with FIN
    co_await wait_until(ex, [&] { return reader.ended.has_value(); });
    EXPECT_TRUE(reader.ended.has_value());
    if (reader.ended) {
      EXPECT_FALSE(*reader.ended) << reader.ended->message();
    }
    EXPECT_EQ(reader.got, data);
    EXPECT_GT(reader.callbacks, 0);
    s.client->close();
    // A reader still waiting is called back with the session's failure: let that happen
    // while it exists.
    co_await wait_until(ex, [&] { return reader.ended.has_value(); });
  });
}

TEST(Session, CallbackReaderSeesAReset) {
  run([](asio::any_io_executor ex) -> asio::awaitable<void> {
    std::unique_ptr<channel> server_side;
    auto s = co_await connect(ex, session_settings{},
                              [&](incoming_stream in) { server_side = in.accept(); });
    target t{"dev-1", 22, protocol::tcp};
    auto [ec, ch] = co_await s.client->open(t);
    EXPECT_FALSE(ec) << ec.message();
    if (ec || !server_side) co_return s.client->close();
    callback_reader reader(*server_side);
    reader.pump();
    ch->reset(errc::stream_reset);
    co_await wait_until(ex, [&] { return reader.ended.has_value(); });
    EXPECT_TRUE(reader.ended.has_value());
    if (reader.ended) {
      EXPECT_EQ(*reader.ended, make_error_code(errc::stream_reset));
    }
    s.client->close();
    co_await wait_until(ex, [&] { return reader.ended.has_value(); });
  });
}

}  // namespace
}  // namespace tether::mux
