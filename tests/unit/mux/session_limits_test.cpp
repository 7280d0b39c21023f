// What a session allows a peer to hold: max_streams, and the end of the stream id space.

#include <gtest/gtest.h>

#include "private_member.hpp"
#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::as_bytes;
using testing::echo;
using testing::seen_frame;
using testing::send_all;
using testing::session_fixture;

using SessionLimits = session_fixture;

// The OPEN of stream `id`.
wire::open open_stream(std::uint32_t id) {
  return wire::open{id, 0, 22, 1u << 20, "dev-1"};
}

TEST_F(SessionLimits, AnOpenPastMaxStreamsIsRefusedAndTheSessionStaysUp) {
  session_settings settings;
  settings.max_streams = 2;
  std::vector<std::unique_ptr<channel>> held;
  auto [s, raw, to_session, to_raw] =
      serve(settings, [&](incoming_stream in) { held.push_back(in.accept()); });
  raw->read_all();
  raw->send(open_stream(1));
  raw->send(open_stream(3));
  raw->send(open_stream(5));
  ASSERT_TRUE(settle());
  auto results = raw->all<wire::open_result>();
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].stream_id, 1u);
  EXPECT_EQ(results[0].code, 0);
  EXPECT_EQ(results[1].stream_id, 3u);
  EXPECT_EQ(results[1].code, 0);
  EXPECT_EQ(results[2].stream_id, 5u);
  EXPECT_EQ(results[2].code, static_cast<std::uint8_t>(errc::too_many_streams));
  EXPECT_EQ(results[2].message, "too many streams");
  EXPECT_EQ(held.size(), 2u);
  EXPECT_EQ(s->stream_count(), 2u);
  EXPECT_EQ(s->counters().streams_opened, 2u);
  EXPECT_EQ(s->counters().streams_refused, 1u);

  // The session goes on: it answers a PING, and a stream that ends frees its place.
  raw->send(wire::ping{false, 42});
  raw->send(wire::reset{1, static_cast<std::uint8_t>(errc::stream_reset), "done"});
  raw->send(open_stream(7));
  ASSERT_TRUE(settle());
  EXPECT_FALSE(s->closed());
  const auto pings = raw->all<wire::ping>();
  ASSERT_EQ(pings.size(), 1u);
  EXPECT_EQ(pings[0].opaque, 42u);
  results = raw->all<wire::open_result>();
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[3].stream_id, 7u);
  EXPECT_EQ(results[3].code, 0);
  EXPECT_EQ(held[0]->error(), make_error_code(errc::stream_reset));
  EXPECT_FALSE(held[1]->error());
  EXPECT_EQ(s->stream_count(), 2u);
}

TEST_F(SessionLimits, AClientIsToldTooManyStreamsAndKeepsItsSession) {
  session_settings settings;
  settings.max_streams = 1;
  auto [client, server] =
      connect_pair(settings, [this](incoming_stream in) { echo(std::move(in), ex()); });
  target t{"dev-1", 22, protocol::tcp};
  auto first = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return first->has_value(); }));
  ASSERT_FALSE(first->value().first) << first->value().first.message();
  auto second = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return second->has_value(); }));
  EXPECT_EQ(second->value().first, make_error_code(errc::too_many_streams));
  EXPECT_EQ(client->last_open_error(), "too many streams");

  auto& stream = *first->value().second;
  auto round = start(testing::echo_round(stream, "one is allowed"));
  ASSERT_TRUE(run_until([&] { return round->has_value(); }));
  EXPECT_FALSE(round->value().first);
  EXPECT_EQ(round->value().second, "one is allowed");
  EXPECT_FALSE(client->closed());
  EXPECT_FALSE(server->closed());

  // Once the place is free an open works, and the refusal's words are not its.
  stream.reset(errc::stream_reset);
  const auto served = server;  // a lambda may not capture a structured binding (clang 14)
  ASSERT_TRUE(run_until([&] { return served->stream_count() == 0; }));
  auto next = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return next->has_value(); }));
  EXPECT_FALSE(next->value().first) << next->value().first.message();
  EXPECT_EQ(client->last_open_error(), "");
}

TEST_F(SessionLimits, StreamsWhoseReaderStoppedAreResetWhenTheyHoldTheSharedWindow) {
  session_settings settings;
  settings.stream_window = min_window;  // 64 KiB, fixed
  settings.max_stream_window = min_window;
  settings.session_window = 4 * min_window;
  std::vector<std::unique_ptr<channel>> unread;  // the first four are never read
  auto [client, server] = connect_pair(settings, [&, this](incoming_stream in) {
    if (unread.size() < 4)
      unread.push_back(in.accept());
    else
      echo(std::move(in), ex());
  });
  server->reset_streams_holding_the_window_after(std::chrono::milliseconds(200));
  target t{"dev-1", 22, protocol::tcp};
  const std::string block(min_window, 'x');
  std::vector<std::unique_ptr<channel>> stuck;
  for (int i = 0; i < 4; ++i) {
    auto opened = start(client->open(t));
    ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
    ASSERT_FALSE(opened->value().first);
    stuck.push_back(std::move(opened->value().second));
    auto sent = start(testing::send_all(*stuck.back(), as_bytes(block)));
    ASSERT_TRUE(run_until([&] { return *sent; }));
  }
  // The four hold the server's whole window: a fifth stream's bytes cannot come until they
  // are reset, 200 ms on; then it works, and the four see why they ended.
  auto opened = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
  ASSERT_FALSE(opened->value().first);
  auto round = start(testing::echo_round(*opened->value().second, "still served"));
  ASSERT_TRUE(run_until([&] { return round->has_value(); }));
  EXPECT_FALSE(round->value().first) << round->value().first.message();
  EXPECT_EQ(round->value().second, "still served");
  for (const auto& ch : stuck) EXPECT_EQ(ch->error(), make_error_code(errc::stream_reset));
  EXPECT_FALSE(server->closed());
}

TEST_F(SessionLimits, WithoutTheLimitAStoppedReaderOnlyHoldsTheWindow) {
  session_settings settings;
  settings.stream_window = min_window;
  settings.max_stream_window = min_window;
  settings.session_window = min_window;
  std::vector<std::unique_ptr<channel>> unread;
  auto [client, server] =
      connect_pair(settings, [&](incoming_stream in) { unread.push_back(in.accept()); });
  target t{"dev-1", 22, protocol::tcp};
  auto opened = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
  const std::string block(min_window, 'x');
  auto sent = start(testing::send_all(*opened->value().second, as_bytes(block)));
  ASSERT_TRUE(run_until([&] { return *sent; }));
  run_until([] { return false; }, std::chrono::milliseconds(300));
  EXPECT_FALSE(opened->value().second->error());  // the default: never reset
}

// ---- the end of the stream id space -------------------------------------------------------

// A session keeps its next stream id to itself, and opening two billion streams is no unit
// test: the test sets the counter.
struct next_local_id {
  using type = std::uint32_t session::*;
  friend type member(next_local_id);
};
template struct expose<next_local_id, &session::next_local_id_>;

void set_next_stream_id(session& s, std::uint32_t id) {
  s.*member(next_local_id{}) = id;
}

// The raw peer accepts every stream the session opens.
void accept_opens(testing::frame_peer& raw) {
  raw.read_all([&raw](const seen_frame& f) {
    if (auto o = f.as<wire::open>()) raw.send(wire::open_result{o->stream_id, 0, 1u << 20, ""});
  });
}

// What a session should do at the end of its ids: use the last one like any other, then
// refuse further opens itself, without a wrapped or zero id on the wire and without ending
// the session, whose streams go on. `last` is the last id of the session's side.
class SessionStreamIds : public session_fixture {
 protected:
  void expect_graceful_end_of_ids(session& s, testing::frame_peer& raw, std::uint32_t last);
};

void SessionStreamIds::expect_graceful_end_of_ids(session& s, testing::frame_peer& raw,
                                                  std::uint32_t last) {
  set_next_stream_id(s, last);
  target where{"dev-1", 22, protocol::tcp};
  auto a = start(s.open(where));
  ASSERT_TRUE(run_until([&] { return a->has_value(); }));
  ASSERT_FALSE(a->value().first) << "opening stream " << last << ": " << a->value().first.message();
  auto b = start(s.open(where));
  ASSERT_TRUE(run_until([&] { return b->has_value(); }));
  EXPECT_TRUE(b->value().first) << "an open past the last id succeeded";
  EXPECT_NE(b->value().first, make_error_code(errc::session_lost));
  ASSERT_TRUE(settle());
  const auto opens = raw.all<wire::open>();
  ASSERT_EQ(opens.size(), 1u) << "an open past the last id put an OPEN on the wire";
  EXPECT_FALSE(s.closed());
  auto sent = start(send_all(*a->value().second, as_bytes("still open")));
  ASSERT_TRUE(run_until([&] { return *sent && !raw.all<wire::data>().empty(); }));
  EXPECT_EQ(raw.all<wire::data>()[0].stream_id, last);
}

TEST_F(SessionStreamIds, IdsAboveTwoToThe31AreOrdinary) {
  auto [s, raw, to_session, to_raw] =
      dial({}, wire::welcome{1, wire::max_window, wire::max_window, 0});
  accept_opens(*raw);
  set_next_stream_id(*s, 0x7fffffff);
  target t{"dev-1", 22, protocol::tcp};
  auto a = start(s->open(t));
  ASSERT_TRUE(run_until([&] { return a->has_value(); }));
  ASSERT_FALSE(a->value().first) << a->value().first.message();
  auto b = start(s->open(t));
  ASSERT_TRUE(run_until([&] { return b->has_value(); }));
  ASSERT_FALSE(b->value().first) << b->value().first.message();
  const auto opens = raw->all<wire::open>();
  ASSERT_EQ(opens.size(), 2u);
  EXPECT_EQ(opens[0].stream_id, 0x7fffffffu);
  EXPECT_EQ(opens[1].stream_id, 0x80000001u);

  auto sent = start(send_all(*b->value().second, as_bytes("x")));
  ASSERT_TRUE(run_until([&, &raw = raw] { return *sent && !raw->all<wire::data>().empty(); }));
  EXPECT_EQ(raw->all<wire::data>()[0].stream_id, 0x80000001u);
  EXPECT_FALSE(s->closed());
}

// The client's last id is 2^32-1: a counter that wrapped to 1 would take the OK for it for
// a violation ("OPEN_RESULT for stream 4294967295, which was never opened") and end the
// session, and an open after it would reuse id 1.
TEST_F(SessionStreamIds, AClientUsesItsLastIdThenRefusesOpensAlone) {
  auto [s, raw, to_session, to_raw] =
      dial({}, wire::welcome{1, wire::max_window, wire::max_window, 0});
  accept_opens(*raw);
  expect_graceful_end_of_ids(*s, *raw, 0xffffffffu);
}

// The same on the server's even ids: a counter that wrapped after 2^32-2 would put stream
// id 0 on the wire.
TEST_F(SessionStreamIds, AServerUsesItsLastIdThenRefusesOpensAlone) {
  auto [s, raw, to_session, to_raw] = serve({}, {});
  accept_opens(*raw);
  expect_graceful_end_of_ids(*s, *raw, 0xfffffffeu);
}

}  // namespace
}  // namespace tether::mux
