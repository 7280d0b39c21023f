// A session shares its thread with everything else of its event loop. When the peer's
// bytes arrive faster than they are handled, every read completes at once; the read loop
// must still let other ready work run between its reads rather than decode everything
// buffered first. (Measured under load: a server that read a bulk upload read by read held
// the answer of an interactive stream, ready in its socket, for milliseconds.)

#include <gtest/gtest.h>

#include <asio/post.hpp>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::session_fixture;

using SessionFairness = session_fixture;

constexpr std::size_t frames_sent = 128;        // 2 MiB of 16 KiB DATA frames, one stream window
constexpr std::size_t read_batch = 256 * 1024;  // the most one read of the session takes

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
  auto reader = start([&]() -> asio::awaitable<void> {
    auto [ec, bytes] = co_await ch->receive();
    EXPECT_FALSE(ec);
    asio::post(ex(), [&] { read_when_other_work_ran = s->counters().bytes_in; });
  }());
  ASSERT_TRUE(run_until([&] { return read_when_other_work_ran.has_value(); }));
  EXPECT_LE(*read_when_other_work_ran, 2 * read_batch)
      << "the session read everything buffered before anything else could run";
  EXPECT_TRUE(*reader);
  // The rest arrives all the same.
  ASSERT_TRUE(run_until([&] { return s->counters().bytes_in == frames_sent * payload.size(); }));
}

}  // namespace
}  // namespace tether::mux
