// A session shares its thread with everything else of its event loop. When the peer's
// bytes arrive faster than they are handled, every read completes at once; the read loop
// must still let other ready work run between its reads rather than decode everything
// buffered first. (Measured under load: a server that read a bulk upload read by read held
// the answer of an interactive stream, ready in its socket, for milliseconds.)

#include <gtest/gtest.h>

#include <algorithm>
#include <asio/post.hpp>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::read_batch;
using testing::session_fixture;

using SessionFairness = session_fixture;

constexpr std::size_t frames_sent = 128;  // 2 MiB of 16 KiB DATA frames, one stream window

TEST_F(SessionFairness, OtherWorkRunsBetweenTheReadsOfABulkArrival) {
  std::unique_ptr<channel> ch;
  auto served = serve(session_settings{}, [&](incoming_stream in) { ch = in.accept(); });
  auto& s = served.s;  // a reference, not a structured binding: lambdas capture it below
  auto& raw = served.raw;
  raw->send(wire::open{1, 0, 22, 2u << 20, "dev"});
  ASSERT_TRUE(run_until([&] { return ch != nullptr; }));

  // A whole window of DATA is in the pipe before the session reads any of it, so every
  // read of the session completes without waiting.
  const std::vector<std::byte> payload(wire::max_data_payload, std::byte{'b'});
  std::vector<std::byte> bulk;
  for (std::size_t i = 0; i < frames_sent; ++i) wire::encode(wire::data{1, false, payload}, bulk);
  raw->send_bytes(bulk);

  // When the first bytes reach the stream, some other work becomes ready (a post stands in
  // for a socket of another stream turning readable); note how much the session had read
  // by the time it ran.
  std::optional<std::uint64_t> read_when_other_work_ran;
  // (What a coroutine uses comes in as parameters: they live in its frame, where a
  // lambda's captures would die with the temporary lambda.)
  auto reader = start([](channel& ch, session& s, std::optional<std::uint64_t>& seen,
                         asio::any_io_executor ex) -> asio::awaitable<void> {
    auto [ec, bytes] = co_await ch.receive();
    EXPECT_FALSE(ec);
    asio::post(ex, [&] { seen = s.counters().bytes_in; });
  }(*ch, *s, read_when_other_work_ran, ex()));
  ASSERT_TRUE(run_until([&] { return read_when_other_work_ran.has_value(); }));
  EXPECT_LE(*read_when_other_work_ran, 2 * read_batch)
      << "the session read everything buffered before anything else could run";
  EXPECT_TRUE(*reader);
  // The rest arrives all the same.
  ASSERT_TRUE(run_until([&] { return s->counters().bytes_in == frames_sent * payload.size(); }));
}

// The writer's side of the same: while its writes complete at once, a stream that becomes
// ready during a flush of queued bulk goes out in the next batch, not after all of it.
TEST_F(SessionFairness, AFrameReadyDuringABulkFlushGoesInTheNextBatch) {
  // Until the test lifts it, the pipe holds 64 KiB: the first send's write waits there and
  // the other sends queue behind it.
  auto f =
      dial(session_settings{},
           wire::welcome{wire::protocol_version, wire::max_window, wire::max_window, 0}, 64 * 1024);
  auto open = [&]() -> std::unique_ptr<channel> {
    auto opened = start(f.s->open(target{"dev", 22, protocol::tcp}));
    const auto before = f.raw->all<wire::open>().size();
    f.raw->read_next();
    EXPECT_TRUE(run_until([&] { return f.raw->all<wire::open>().size() > before; }));
    if (f.raw->all<wire::open>().size() == before) return nullptr;
    f.raw->send(
        wire::open_result{f.raw->all<wire::open>().back().stream_id, 0, wire::max_window, ""});
    EXPECT_TRUE(run_until([&] { return opened->has_value(); }));
    return opened->has_value() ? std::move(opened->value().second) : nullptr;
  };
  std::vector<std::unique_ptr<channel>> bulk;
  for (int i = 0; i < 5; ++i) bulk.push_back(open());
  auto small = open(), interactive = open();
  ASSERT_TRUE(small && interactive);
  for (const auto& ch : bulk) ASSERT_TRUE(ch);

  const std::vector<std::byte> big(max_send_size, std::byte{'b'});
  const std::vector<std::byte> one_frame(wire::max_data_payload, std::byte{'s'});
  const std::byte ping{'p'};
  auto send = [](channel& ch, std::span<const std::byte> bytes) -> asio::awaitable<void> {
    auto [ec, credit] = co_await ch.wait_send_credit();
    EXPECT_FALSE(ec);
    EXPECT_GE(credit, bytes.size());
    EXPECT_FALSE(co_await ch.send(bytes));
  };
  std::vector<std::shared_ptr<bool>> sent;
  sent.push_back(start(send(*bulk[0], big)));  // written at once, and waits for the pipe
  ASSERT_TRUE(settle());
  for (std::size_t i = 1; i < bulk.size(); ++i) sent.push_back(start(send(*bulk[i], big)));
  // One frame, sent in the first round of the writer's first batch; once its sender learns
  // so, the interactive stream answers (a ping-pong's reply, say).
  sent.push_back(
      start([](auto send, channel& small, std::span<const std::byte> frame, channel& interactive,
               std::span<const std::byte> byte) -> asio::awaitable<void> {
        co_await send(small, frame);
        co_await send(interactive, byte);
      }(send, *small, one_frame, *interactive, std::span(&ping, 1))));
  ASSERT_TRUE(settle());

  // The limit goes: from now on every write completes at once.
  f.to_raw->capacity = 0;
  f.to_raw->space.notify();
  f.raw->read_all();
  const auto id = f.raw->all<wire::open>().back().stream_id;
  auto data_before_ping = [&]() -> std::optional<std::size_t> {
    std::size_t n = 0;
    for (const auto& d : f.raw->all<wire::data>()) {
      if (d.stream_id == id) return n;
      n += d.payload.size();
    }
    return std::nullopt;
  };
  ASSERT_TRUE(run_until([&] { return data_before_ping().has_value(); }));
  // The first send (256 KiB), the writer's first batch (256 KiB), and in the second batch
  // at most a frame of each stream ahead of it; not the 1 MiB still queued.
  constexpr std::size_t batch = 256 * 1024;
  EXPECT_LE(*data_before_ping(), max_send_size + batch + bulk.size() * wire::max_data_payload)
      << "the interactive frame waited for the whole flush";
  // Every send completes before its channel goes away.
  EXPECT_TRUE(run_until([&] {
    return std::all_of(sent.begin(), sent.end(), [](const auto& done) { return *done; });
  }));
}

}  // namespace
}  // namespace tether::mux
