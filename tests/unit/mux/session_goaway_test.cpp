// GOAWAY in both directions: it stops new streams, never the ones already open, and it does
// not end the session by itself.

#include <gtest/gtest.h>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::as_bytes;
using testing::echo;
using testing::echo_round;
using testing::session_fixture;

using SessionGoaway = session_fixture;

TEST_F(SessionGoaway, FromThePeerStopsNewStreamsButNotTheSessionOrItsStreams) {
  auto [client, server] =
      connect_pair({}, [this](incoming_stream in) { echo(std::move(in), ex()); });
  target t{"dev-1", 22, protocol::tcp};
  auto first = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return first->has_value(); }));
  ASSERT_FALSE(first->value().first) << first->value().first.message();
  auto& stream = *first->value().second;

  server->goaway(errc::going_away, "maintenance");
  auto closed = start(client->wait_closed());
  ASSERT_TRUE(run_until([&] { return closed->has_value(); })) << "wait_closed() missed the GOAWAY";
  EXPECT_EQ(closed->value(), make_error_code(errc::going_away));

  // Not ended: the open stream still carries bytes both ways, up to its FIN.
  auto ended = start(client->wait_ended());
  auto server_ended = start(server->wait_ended());
  auto round = start(echo_round(stream, "after the goaway"));
  ASSERT_TRUE(run_until([&] { return round->has_value(); }));
  EXPECT_FALSE(round->value().first) << round->value().first.message();
  EXPECT_EQ(round->value().second, "after the goaway");
  ASSERT_TRUE(settle());
  EXPECT_FALSE(ended->has_value()) << "a GOAWAY alone ended the session";
  EXPECT_FALSE(server_ended->has_value());
  EXPECT_FALSE(client->closed());

  // New streams are refused here, without asking the peer.
  auto second = start(client->open(t));
  ASSERT_TRUE(run_until([&] { return second->has_value(); }));
  EXPECT_EQ(second->value().first, make_error_code(errc::going_away));
  EXPECT_EQ(second->value().second, nullptr);
  ASSERT_TRUE(settle());
  EXPECT_EQ(server->counters().streams_opened, 1u);

  // wait_closed() keeps answering at once (a loop around it must use wait_ended()).
  auto again = start(client->wait_closed());
  ASSERT_TRUE(settle());
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ(again->value(), make_error_code(errc::going_away));

  client->close();
  ASSERT_TRUE(run_until([&] { return ended->has_value() && server_ended->has_value(); }));
  EXPECT_EQ(ended->value(), make_error_code(errc::session_lost));
  EXPECT_EQ(server_ended->value(), make_error_code(errc::session_lost));
}

// The server's side of issue 8's first bug: a client's GOAWAY must not look like the
// session's end to the server.
TEST_F(SessionGoaway, FromARawClientLeavesTheServerServing) {
  auto [s, raw, to_session, to_raw] =
      serve({}, [this](incoming_stream in) { echo(std::move(in), ex()); });
  raw->read_all();
  raw->send(wire::open{1, 0, 22, 1u << 20, "dev-1"});
  raw->send(wire::goaway{0, static_cast<std::uint8_t>(errc::going_away), "client leaving"});
  auto closed = start(s->wait_closed());
  ASSERT_TRUE(run_until([&] { return closed->has_value(); }));
  EXPECT_EQ(closed->value(), make_error_code(errc::going_away));
  auto ended = start(s->wait_ended());

  const std::string text = "still here";
  raw->send(wire::data{1, true, as_bytes(text)});
  ASSERT_TRUE(run_until([&, &raw = raw] {
    const auto data = raw->all<wire::data>();
    return !data.empty() && data.back().fin;
  }));
  std::string echoed;
  for (const auto& d : raw->all<wire::data>()) {
    EXPECT_EQ(d.stream_id, 1u);
    echoed.append(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
  }
  EXPECT_EQ(echoed, text);
  ASSERT_TRUE(settle());
  EXPECT_FALSE(ended->has_value()) << "the client's GOAWAY ended the session";
  EXPECT_EQ(s->stream_count(), 0u);

  // The server opens nothing toward a peer that is going away.
  target t{"dev-1", 22, protocol::tcp};
  auto opened = start(s->open(t));
  ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
  EXPECT_EQ(opened->value().first, make_error_code(errc::going_away));
  ASSERT_TRUE(settle());
  EXPECT_TRUE(raw->all<wire::open>().empty());

  raw->close();
  ASSERT_TRUE(run_until([&] { return ended->has_value(); }));
  EXPECT_EQ(ended->value(), make_error_code(errc::session_lost));
}

TEST_F(SessionGoaway, SentLocallyRefusesNewOpensAndLetsOpenStreamsFinish) {
  auto [s, raw, to_session, to_raw] =
      serve({}, [this](incoming_stream in) { echo(std::move(in), ex()); });
  auto ended = start(s->wait_ended());
  raw->read_all();
  raw->send(wire::open{1, 0, 22, 1u << 20, "dev-1"});
  ASSERT_TRUE(settle());
  ASSERT_EQ(raw->all<wire::open_result>().size(), 1u);
  EXPECT_EQ(raw->all<wire::open_result>()[0].code, 0);

  s->goaway(errc::going_away, "shutting down");
  s->goaway(errc::going_away, "said twice");  // once is enough
  ASSERT_TRUE(settle());
  const auto goaways = raw->all<wire::goaway>();
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].last_stream_id, 1u);
  EXPECT_EQ(goaways[0].code, static_cast<std::uint8_t>(errc::going_away));
  EXPECT_EQ(goaways[0].message, "shutting down");

  // A client that opens anyway is refused, and the session goes on.
  raw->send(wire::open{3, 0, 22, 1u << 20, "dev-1"});
  ASSERT_TRUE(settle());
  const auto results = raw->all<wire::open_result>();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].stream_id, 3u);
  EXPECT_EQ(results[1].code, static_cast<std::uint8_t>(errc::going_away));
  EXPECT_EQ(s->counters().streams_opened, 1u);
  EXPECT_EQ(s->counters().streams_refused, 1u);

  // The stream opened before finishes both ways.
  const std::string text = "last words";
  raw->send(wire::data{1, true, as_bytes(text)});
  ASSERT_TRUE(run_until([&, &raw = raw] {
    const auto data = raw->all<wire::data>();
    return !data.empty() && data.back().fin;
  }));
  std::string echoed;
  for (const auto& d : raw->all<wire::data>())
    echoed.append(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
  EXPECT_EQ(echoed, text);
  ASSERT_TRUE(settle());
  EXPECT_EQ(s->stream_count(), 0u);
  EXPECT_FALSE(ended->has_value());
  EXPECT_TRUE(raw->all<wire::reset>().empty());
}

}  // namespace
}  // namespace tether::mux
