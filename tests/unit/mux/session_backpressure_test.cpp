// A peer that does not read what a session sends it: the session holds a bounded amount
// for it, stops reading its frames, and lets the keepalive end it. The pipes here hold
// 64 KiB per direction, like a socket's buffers, so a peer that stops reading stops us.

#include <gtest/gtest.h>

#include <map>

#include "private_member.hpp"
#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::read_batch;
using testing::seen_frame;
using testing::session_fixture;

using SessionBackpressure = session_fixture;

constexpr std::size_t pipe_capacity = 64 * 1024;
constexpr std::size_t ping_size = wire::header_size + 8;  // a PING and its ACK alike

// The session's queue of control frames.
struct control_out {
  using type = std::vector<std::byte> session::*;
  friend type member(control_out);
};
template struct expose<control_out, &session::control_out_>;

std::size_t queued_control_bytes(session& s) {
  return (s.*member(control_out{})).size();
}

TEST_F(SessionBackpressure, APingFloodThatNeverReadsIsNotReadEitherAndTimesOut) {
  session_settings settings;
  settings.max_queued_bytes = 64 * 1024;
  settings.keepalive = std::chrono::milliseconds(200);
  auto [s, raw, to_session, to_raw] = serve(settings, {}, client_hello(), pipe_capacity);
  auto ended = start(s->wait_ended());

  // After WELCOME the raw client only writes: PINGs, 64 to a write, for as long as it can.
  std::vector<std::byte> batch;
  for (int i = 0; i < 64; ++i) wire::encode(wire::ping{false, std::uint64_t(i)}, batch);
  ASSERT_EQ(batch.size(), 64 * ping_size);
  raw->flood(batch);

  // Everything that can happen without a timer has happened: the session answered what it
  // read until its answers piled up, then stopped reading, and the client's write waits.
  ASSERT_TRUE(settle()) << "the session never stops reading";
  ASSERT_FALSE(s->closed());
  EXPECT_TRUE(raw->writing()) << "the flood's write did not block";
  EXPECT_EQ(to_session->bytes.size(), pipe_capacity) << "the session is still reading";
  EXPECT_EQ(to_raw->bytes.size(), pipe_capacity) << "the session's answers are not stuck";

  // Bounded: what the session holds for the peer (waiting and in flight) reached the budget
  // and is at most the budget plus one read's worth of answers.
  const auto queued = queued_control_bytes(*s);
  EXPECT_GE(s->queued_bytes(), settings.max_queued_bytes) << "stopped reading below the budget";
  EXPECT_LE(s->queued_bytes(), settings.max_queued_bytes + read_batch);
  EXPECT_LE(queued, s->queued_bytes());
  // PINGs the session read = what the client wrote - what is still in the pipe. The write
  // that waits has put up to one batch into the pipe, uncounted in bytes_written().
  const auto read_at_most = raw->bytes_written() + batch.size() - to_session->bytes.size();
  const auto answers_held = read_at_most - to_raw->bytes.size();
  EXPECT_LE(answers_held, 2 * (settings.max_queued_bytes + read_batch))
      << "control queue " << queued << " bytes";

  // Three keepalive intervals without reading anything: the session ends, and the client's
  // write fails instead of waiting forever.
  ASSERT_TRUE(run_until([&] { return ended->has_value(); }));
  EXPECT_EQ(ended->value(), make_error_code(errc::timed_out)) << ended->value().message();
  ASSERT_TRUE(run_until([&, &raw = raw] { return !raw->flooding(); }));
  EXPECT_EQ(raw->write_error(), make_error_code(asio::error::broken_pipe));
}

// How many sends are in progress, between wait_send_credit() and the end of send().
struct sends_in_progress {
  int now = 0;
  int most = 0;
  int streams_with_credit = 0;  // streams whose wait_send_credit() returned at least once
  int finished = 0;
};

asio::awaitable<void> send_counting(channel& ch, std::string_view rest, sends_in_progress& w) {
  bool had_credit = false;
  while (!rest.empty()) {
    auto [ec, credit] = co_await ch.wait_send_credit();
    if (ec) throw std::system_error(ec, "wait_send_credit");
    if (!std::exchange(had_credit, true)) ++w.streams_with_credit;
    w.most = std::max(w.most, ++w.now);
    const auto n = std::min(credit, rest.size());
    const auto sec = co_await ch.send(testing::as_bytes(rest.substr(0, n)));
    --w.now;
    if (sec) throw std::system_error(sec, "send");
    rest.remove_prefix(n);
  }
  ++w.finished;
}

// Streams with data for a peer that never reads: only max_queued_bytes / max_send_size
// sends may be in progress at once; the others wait in wait_send_credit(). Once the peer
// reads, every byte arrives, and the bound holds throughout.
TEST_F(SessionBackpressure, SendersWaitTheirTurnForTheOutputBudget) {
  constexpr int streams = 8;
  constexpr std::size_t each = 512 * 1024;
  session_settings settings;
  settings.max_queued_bytes = 4 * max_send_size;
  settings.keepalive = std::chrono::milliseconds(0);  // no timer: settle() finds the end
  // Flow control never stops anybody here: only the output budget does.
  auto [s, raw, to_session, to_raw] =
      dial(settings, wire::welcome{1, wire::max_window, wire::max_window, 0}, pipe_capacity);

  std::map<std::uint32_t, std::string> received;
  int opens_seen = 0;
  auto* peer = raw.get();
  raw->read_all([&, peer](const seen_frame& f) {
    if (auto o = f.as<wire::open>()) {
      peer->send(wire::open_result{o->stream_id, 0, wire::max_window, ""});
      if (++opens_seen == streams) peer->pause_reading();  // from here on, never reads
    }
    if (auto d = f.as<wire::data>())
      received[d->stream_id].append(reinterpret_cast<const char*>(d->payload.data()),
                                    d->payload.size());
  });

  std::vector<std::unique_ptr<channel>> channels;
  for (int i = 0; i < streams; ++i) {
    target t{"dev-1", 22, protocol::tcp};
    auto opened = start(s->open(t));
    ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
    ASSERT_FALSE(opened->value().first) << opened->value().first.message();
    channels.push_back(std::move(opened->value().second));
  }

  std::vector<std::string> data;
  data.reserve(streams);  // the senders hold views of these
  sends_in_progress watch;
  for (int i = 0; i < streams; ++i) {
    data.push_back(std::string(each, char('a' + i)));
    start(send_counting(*channels[i], data.back(), watch));
  }

  ASSERT_TRUE(settle());
  // The budget holds the sends' buffers and the batch stuck in flight (about one send's
  // worth, counted on top of the send that wrote it): fewer sends than budget / size.
  const auto budget = static_cast<int>(settings.max_queued_bytes / max_send_size);
  EXPECT_GE(watch.now, 2) << "the budget lets no sends run side by side";
  EXPECT_LT(watch.now, budget) << "the batch in flight is not counted";
  EXPECT_EQ(watch.most, watch.now);
  EXPECT_EQ(watch.streams_with_credit, watch.now)
      << "wait_send_credit() returned to more streams than the budget allows";
  EXPECT_EQ(watch.finished, 0);
  EXPECT_EQ(to_raw->bytes.size(), pipe_capacity);

  raw->resume_reading();
  ASSERT_TRUE(run_until([&] { return watch.finished == streams; }, std::chrono::seconds(30)));
  EXPECT_LE(watch.most, budget);
  ASSERT_TRUE(settle());
  const auto opens = raw->all<wire::open>();
  ASSERT_EQ(opens.size(), std::size_t{streams});
  for (int i = 0; i < streams; ++i) {
    const auto& got = received[opens[i].stream_id];
    EXPECT_EQ(got.size(), each) << "stream " << i;
    EXPECT_TRUE(got == data[i]) << "stream " << i << " arrived altered";
  }
  EXPECT_FALSE(s->closed());
}

}  // namespace
}  // namespace tether::mux
