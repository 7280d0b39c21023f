// A stream that ends with bytes or datagrams still queued toward a peer that is not reading
// gives their session credit back: the peer never sees them, so it would never return it,
// and each such reset would shrink the session's send window for good.
// (Found by fuzz_session: tests/fuzz/corpus/fuzz_session/*-loses-session-credit.)
#include <gtest/gtest.h>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::frame_peer;
using testing::session_fixture;

constexpr std::uint32_t session_window = 256 * 1024;
constexpr std::size_t stalled_pipe_capacity = 16 * 1024;

class SessionCredit : public session_fixture {
 protected:
  // A client session facing a raw server that grants `session_window` for the session and
  // all there is per stream, then reads only when told. Opens one stream of `proto`.
  std::unique_ptr<channel> open_on(facing_raw& f, protocol proto) {
    const auto before = f.raw->all<wire::open>().size();
    auto opened = start(f.s->open({"dev-1", 53, proto}));
    if (!reading_) f.raw->read_next();  // the OPEN alone: the peer reads nothing else
    EXPECT_TRUE(run_until([&] { return f.raw->all<wire::open>().size() > before; }));
    if (f.raw->all<wire::open>().size() == before) return nullptr;
    const auto open = f.raw->all<wire::open>().back();
    f.raw->send(wire::open_result{open.stream_id, 0, wire::max_window, ""});
    EXPECT_TRUE(run_until([&] { return opened->has_value(); }));
    return opened->has_value() ? std::move(opened->value().second) : nullptr;
  }

  facing_raw stalled() {
    session_settings settings;
    return dial(settings,
                wire::welcome{wire::protocol_version, session_window, wire::max_window, 0},
                stalled_pipe_capacity);
  }

  // Payload bytes of every DATA and DATAGRAM the raw peer has read.
  static std::size_t payload_seen(frame_peer& raw) {
    std::size_t n = 0;
    for (const auto& d : raw.all<wire::data>()) n += d.payload.size();
    for (const auto& d : raw.all<wire::datagram>()) n += d.payload.size();
    return n;
  }

  // The peer reads again, from now on (and returns no credit).
  void start_reading(facing_raw& f) {
    reading_ = true;
    f.raw->read_all();
  }

  bool reading_ = false;
};

TEST_F(SessionCredit, AFlowResetWithDatagramsQueuedGivesTheirCreditBack) {
  auto f = stalled();
  auto flow = open_on(f, protocol::udp);
  ASSERT_TRUE(flow);
  const std::vector<std::byte> d(1000, std::byte{7});
  // The first datagrams fill the pipe, and the session's write of them waits there; the
  // next ones stay in the flow's queue while the peer reads nothing.
  for (int i = 0; i < 40; ++i) ASSERT_EQ(flow->try_send_datagram(d), datagram_status::sent);
  ASSERT_TRUE(settle());
  std::size_t queued = 0;
  while (flow->try_send_datagram(d) == datagram_status::sent) ++queued;
  ASSERT_TRUE(settle());
  ASSERT_GT(queued, 0u) << "some datagrams must still be queued";
  flow->reset(errc::stream_reset);
  ASSERT_TRUE(settle());

  // The peer reads again, never returning credit. A second flow may use all the session
  // window the first one's written datagrams left.
  start_reading(f);
  auto second = open_on(f, protocol::udp);
  ASSERT_TRUE(second);
  for (int i = 0; i < 1000 && second->try_send_datagram(d) == datagram_status::sent; ++i)
    ASSERT_TRUE(settle());
  ASSERT_TRUE(settle());
  EXPECT_GT(payload_seen(*f.raw) + d.size(), session_window)
      << "credit of datagrams that never went out was lost";
}

TEST_F(SessionCredit, ATcpStreamResetWhileItsSendWaitsGivesTheCreditBack) {
  auto f = stalled();
  auto a = open_on(f, protocol::tcp);
  auto b = open_on(f, protocol::tcp);
  ASSERT_TRUE(a && b);
  // a's send fills the pipe; b's send then waits in the ready list behind it.
  const std::vector<std::byte> bytes(64 * 1024, std::byte{1});
  auto send_all_of = [&](channel& ch) -> std::shared_ptr<std::optional<asio::error_code>> {
    auto credit = start(ch.wait_send_credit());
    EXPECT_TRUE(run_until([&] { return credit->has_value(); }));
    const auto n = credit->value().second;
    return start(ch.send(std::span(bytes).first(std::min(n, bytes.size()))));
  };
  auto sending_a = send_all_of(*a);
  auto sending_b = send_all_of(*b);
  ASSERT_TRUE(settle());
  ASSERT_FALSE(sending_b->has_value()) << "b's bytes should be waiting for their turn";
  b->reset(errc::stream_reset);
  ASSERT_TRUE(settle());

  // The peer reads everything, returning no credit: what is left of the session window
  // must be the window minus what it saw, so a third stream can send exactly that.
  start_reading(f);
  ASSERT_TRUE(settle());
  auto c = open_on(f, protocol::tcp);
  ASSERT_TRUE(c);
  for (int i = 0; i < 100; ++i) {
    auto credit = start(c->wait_send_credit());
    if (!run_until([&] { return credit->has_value(); }, std::chrono::milliseconds(200))) break;
    auto sent = start(c->send(std::span(bytes).first(std::min(credit->value().second, bytes.size()))));
    ASSERT_TRUE(run_until([&] { return sent->has_value(); }));
  }
  ASSERT_TRUE(settle());
  EXPECT_EQ(payload_seen(*f.raw), session_window)
      << "credit of bytes that never went out was lost";
  // The sends still waiting refer to the channels: they end before the channels do.
  f.s->close();
  ASSERT_TRUE(settle());
}

}  // namespace
}  // namespace tether::mux
