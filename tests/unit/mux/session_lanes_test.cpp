// Lanes in a session (docs/PROTOCOL.md, "Moving a stream"): negotiated only when both peers
// offer them; a stream the server accepts movable may end a direction with MOVE instead of
// FIN, after every byte sent before it; a claim opens with the token and no device; and a
// MOVE the session never allowed ends the session.

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "session_fixture.hpp"

namespace tether::mux {
namespace lanes_session {
namespace {

using testing::encoded;
using testing::receive_all;
using testing::send_all;
using testing::session_fixture;

wire::move_token lane_token(std::uint8_t seed) {
  wire::move_token t{};
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::byte>(seed ^ (31 * i));
  return t;
}

// `n` bytes of a pattern that shows where in the stream a byte came from.
std::string lane_pattern(std::size_t n, std::size_t offset = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((offset + i) * 131 + (offset + i) / 251);
  return s;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Sends `data`, then MOVE with `token`. Parameters, not captures: a coroutine lambda's
// captures die with the lambda, before the coroutine ends.
asio::awaitable<asio::error_code> send_then_move(channel& ch, std::span<const std::byte> data,
                                                 wire::move_token token) {
  co_await send_all(ch, data);
  co_return co_await ch.send_move(token);
}

session_settings with_lanes(bool lanes) {
  session_settings s;
  s.lanes = lanes;
  return s;
}

class SessionLanes : public session_fixture {
 protected:
  // Opens a TCP stream from the client and waits for it and for the server's channel,
  // which `accepted` receives from the open handler.
  std::unique_ptr<channel> open_stream(session& client, std::unique_ptr<channel>& accepted) {
    auto opened = start(client.open(target{"dev-1", 22, protocol::tcp, {}}));
    EXPECT_TRUE(run_until([&] { return opened->has_value() && accepted; })) << "no stream";
    if (!opened->has_value()) return nullptr;
    EXPECT_FALSE(opened->value().first) << opened->value().first.message();
    return std::move(opened->value().second);
  }

  wire::hello lanes_hello(bool lanes) {
    auto h = client_hello();
    h.lanes = lanes;
    return h;
  }
};

// ---- negotiation -------------------------------------------------------------------------

struct offer_case {
  bool client, server, expected;
};

TEST_F(SessionLanes, AreNegotiatedOnlyWhenBothPeersOffer) {
  for (const auto c : {offer_case{false, false, false}, offer_case{true, false, false},
                       offer_case{false, true, false}, offer_case{true, true, true}}) {
    SCOPED_TRACE(::testing::Message()
                 << "client offers " << c.client << ", server offers " << c.server);
    auto pair = connect_pair(with_lanes(c.client), with_lanes(c.server), {});
    EXPECT_EQ(pair.client->lanes(), c.expected);
    EXPECT_EQ(pair.server->lanes(), c.expected);
  }
}

// What the server says in WELCOME: lanes only when it offers them and the HELLO did.
TEST_F(SessionLanes, WelcomeSaysLanesOnlyToAClientThatOffered) {
  for (const auto c : {offer_case{false, true, false}, offer_case{true, false, false},
                       offer_case{true, true, true}}) {
    SCOPED_TRACE(::testing::Message()
                 << "client offers " << c.client << ", server offers " << c.server);
    auto peer = serve(with_lanes(c.server), {}, lanes_hello(c.client));
    ASSERT_FALSE(peer.raw->frames().empty());
    const auto w = peer.raw->frames().front().as<wire::welcome>();
    ASSERT_TRUE(w);
    EXPECT_EQ(w->lanes, c.expected);
    EXPECT_EQ(peer.s->lanes(), c.expected);
  }
}

// What the client says in HELLO: lanes when its settings offer them.
TEST_F(SessionLanes, HelloOffersLanesFromTheSettings) {
  for (const bool lanes : {false, true}) {
    auto peer = dial(with_lanes(lanes),
                     wire::welcome{wire::protocol_version, 16u << 20, 2u << 20, 0, true});
    ASSERT_FALSE(peer.raw->frames().empty());
    const auto h = peer.raw->frames().front().as<wire::hello>();
    ASSERT_TRUE(h);
    EXPECT_EQ(h->lanes, lanes);
    EXPECT_EQ(peer.s->lanes(), lanes);
  }
}

// ---- which streams may move --------------------------------------------------------------

struct movable_case {
  bool lanes, accept_movable, expected;
};

TEST_F(SessionLanes, OnlyAStreamAcceptedMovableWithLanesCanMove) {
  for (const auto c : {movable_case{true, true, true}, movable_case{true, false, false},
                       movable_case{false, true, false}, movable_case{false, false, false}}) {
    SCOPED_TRACE(::testing::Message()
                 << "lanes " << c.lanes << ", accepted movable " << c.accept_movable);
    std::unique_ptr<channel> far;
    auto pair = connect_pair(with_lanes(c.lanes), with_lanes(c.lanes),
                             [&](incoming_stream in) { far = in.accept(c.accept_movable); });
    auto near = open_stream(*pair.client, far);
    ASSERT_TRUE(near && far);
    EXPECT_EQ(near->can_move(), c.expected);
    EXPECT_EQ(far->can_move(), c.expected);
    if (!c.expected) {
      // Neither side may move it: send_move() refuses and the stream goes on.
      auto refused = start(near->send_move(lane_token(1)));
      auto refused_far = start(far->send_move(lane_token(2)));
      ASSERT_TRUE(run_until([&] { return refused->has_value() && refused_far->has_value(); }));
      EXPECT_EQ(refused->value(), make_error_code(errc::unsupported));
      EXPECT_EQ(refused_far->value(), make_error_code(errc::unsupported));
      const std::string text = "still here";
      auto sent = start(send_all(*near, bytes_of(text)));
      ASSERT_TRUE(run_until([&] { return *sent; }));
      auto fin = start(near->send_eof());
      auto got = start(receive_all(*far));
      ASSERT_TRUE(run_until([&] { return fin->has_value() && got->has_value(); }));
      EXPECT_FALSE(got->value().first);
      EXPECT_EQ(got->value().second, "still here");
      EXPECT_FALSE(far->moved_away());
    }
    ASSERT_TRUE(settle());
    EXPECT_FALSE(pair.client->closed());
    EXPECT_FALSE(pair.server->closed());
  }
}

// The OPEN_RESULT says movable only where the session has lanes.
TEST_F(SessionLanes, OpenResultIsMarkedMovableOnlyWithLanes) {
  for (const bool lanes : {false, true}) {
    SCOPED_TRACE(lanes ? "with lanes" : "without lanes");
    std::vector<std::unique_ptr<channel>> held;
    auto peer = serve(
        with_lanes(true), [&](incoming_stream in) { held.push_back(in.accept(true)); },
        lanes_hello(lanes));
    peer.raw->read_all();
    peer.raw->send(wire::open{1, 0, 22, 2u << 20, "dev-1"});
    ASSERT_TRUE(run_until([&] { return !peer.raw->all<wire::open_result>().empty(); }));
    const auto r = peer.raw->all<wire::open_result>().front();
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.movable, lanes);
    ASSERT_EQ(held.size(), 1u);
    EXPECT_EQ(held.front()->can_move(), lanes);
  }
}

// ---- a stream that moves -----------------------------------------------------------------

// Each direction in turn: what was sent before the MOVE arrives whole, then end-of-stream
// with the token; with both directions moved the stream is gone from both sessions.
TEST_F(SessionLanes, AMovedStreamDeliversEveryByteBeforeItsMoveBothWays) {
  std::unique_ptr<channel> far;
  auto pair = connect_pair(with_lanes(true), with_lanes(true),
                           [&](incoming_stream in) { far = in.accept(true); });
  auto near = open_stream(*pair.client, far);
  ASSERT_TRUE(near && far);
  ASSERT_TRUE(near->can_move());
  EXPECT_EQ(pair.client->stream_count(), 1u);
  EXPECT_EQ(pair.server->stream_count(), 1u);

  // Client to server: several frames' worth, so the MOVE must wait behind DATA frames.
  const auto up = lane_pattern(300 * 1024);
  const auto up_token = lane_token(0x5a);
  auto got_up = start(receive_all(*far));
  auto moved_up = start(send_then_move(*near, bytes_of(up), up_token));
  ASSERT_TRUE(run_until([&] { return moved_up->has_value() && got_up->has_value(); }));
  EXPECT_FALSE(moved_up->value()) << moved_up->value().message();
  EXPECT_FALSE(got_up->value().first) << got_up->value().first.message();
  ASSERT_EQ(got_up->value().second.size(), up.size());
  EXPECT_TRUE(got_up->value().second == up) << "the bytes before the MOVE changed";
  ASSERT_TRUE(far->moved_away());
  EXPECT_EQ(*far->moved_away(), up_token);
  EXPECT_FALSE(near->moved_away()) << "the server's direction has not moved yet";

  // After our MOVE nothing more may be sent, as after a FIN.
  auto late = start(near->send_move(up_token));
  auto late_credit = start(near->wait_send_credit());
  ASSERT_TRUE(run_until([&] { return late->has_value() && late_credit->has_value(); }));
  EXPECT_EQ(late->value(), make_error_code(asio::error::shut_down));
  EXPECT_EQ(late_credit->value().first, make_error_code(asio::error::shut_down));

  // Server to client: the other direction is still open, and moves in turn.
  const auto down = lane_pattern(200 * 1024, 7);
  const auto down_token = lane_token(0xa5);
  auto got_down = start(receive_all(*near));
  auto moved_down = start(send_then_move(*far, bytes_of(down), down_token));
  ASSERT_TRUE(run_until([&] { return moved_down->has_value() && got_down->has_value(); }));
  EXPECT_FALSE(moved_down->value()) << moved_down->value().message();
  EXPECT_FALSE(got_down->value().first) << got_down->value().first.message();
  ASSERT_EQ(got_down->value().second.size(), down.size());
  EXPECT_TRUE(got_down->value().second == down);
  ASSERT_TRUE(near->moved_away());
  EXPECT_EQ(*near->moved_away(), down_token);

  ASSERT_TRUE(settle());
  EXPECT_EQ(pair.client->stream_count(), 0u);
  EXPECT_EQ(pair.server->stream_count(), 0u);
  EXPECT_FALSE(pair.client->closed());
  EXPECT_FALSE(pair.server->closed());
  EXPECT_FALSE(near->error());
  EXPECT_FALSE(far->error());
}

// A direction may move while the other ends with an ordinary FIN.
TEST_F(SessionLanes, AMoveOneWayAndAFinTheOtherEndTheStream) {
  std::unique_ptr<channel> far;
  auto pair = connect_pair(with_lanes(true), with_lanes(true),
                           [&](incoming_stream in) { far = in.accept(true); });
  auto near = open_stream(*pair.client, far);
  ASSERT_TRUE(near && far);

  auto fin = start(far->send_eof());
  auto got_fin = start(receive_all(*near));
  ASSERT_TRUE(run_until([&] { return fin->has_value() && got_fin->has_value(); }));
  EXPECT_FALSE(got_fin->value().first);
  EXPECT_FALSE(near->moved_away()) << "a FIN is not a move";

  const auto token = lane_token(3);
  auto moved = start(near->send_move(token));
  auto got_move = start(receive_all(*far));
  ASSERT_TRUE(run_until([&] { return moved->has_value() && got_move->has_value(); }));
  EXPECT_FALSE(moved->value());
  ASSERT_TRUE(far->moved_away());
  EXPECT_EQ(*far->moved_away(), token);
  ASSERT_TRUE(settle());
  EXPECT_EQ(pair.client->stream_count(), 0u);
  EXPECT_EQ(pair.server->stream_count(), 0u);
}

// ---- claims --------------------------------------------------------------------------------

TEST_F(SessionLanes, AClaimReachesTheServerWithItsTokenAndNoDevice) {
  std::optional<target> seen;
  std::unique_ptr<channel> far;
  auto pair = connect_pair(with_lanes(true), with_lanes(true), [&](incoming_stream in) {
    seen = in.target();
    far = in.accept(true);
  });
  const auto token = lane_token(0x42);
  target claim;
  claim.resume = token;
  auto opened = start(pair.client->open(claim));
  ASSERT_TRUE(run_until([&] { return opened->has_value() && seen; }));
  EXPECT_FALSE(opened->value().first) << opened->value().first.message();
  ASSERT_TRUE(seen->resume);
  EXPECT_EQ(*seen->resume, token);
  EXPECT_TRUE(seen->device.empty()) << seen->device;
  EXPECT_EQ(seen->port, 0);
  EXPECT_EQ(seen->proto, protocol::tcp);

  // It is a stream like another: bytes pass on it.
  auto& near = *opened->value().second;
  const std::string text = "resumed";
  auto got = start(receive_all(*far));
  auto sent = start(send_all(near, bytes_of(text)));
  ASSERT_TRUE(run_until([&] { return *sent; }));
  auto fin = start(near.send_eof());
  ASSERT_TRUE(run_until([&] { return fin->has_value() && got->has_value(); }));
  EXPECT_EQ(got->value().second, "resumed");
}

// A claim names a TCP stream; a port given with it goes nowhere: the OPEN carries port 0.
TEST_F(SessionLanes, AClaimIsSentWithTheTokenAsItsDevice) {
  auto peer =
      dial(with_lanes(true), wire::welcome{wire::protocol_version, 16u << 20, 2u << 20, 0, true});
  ASSERT_TRUE(peer.s->lanes());
  peer.raw->read_all();
  const auto token = lane_token(0x17);
  target claim;
  claim.resume = token;
  claim.port = 8080;
  auto opened = start(peer.s->open(claim));
  ASSERT_TRUE(run_until([&] { return !peer.raw->all<wire::open>().empty(); }));
  const auto o = peer.raw->all<wire::open>().front();
  EXPECT_TRUE(o.resume);
  EXPECT_EQ(o.proto, 0);
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.device, wire::move_token_text(token));
  peer.raw->send(wire::open_result{o.stream_id, 0, 65536, "", true});
  ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
  EXPECT_FALSE(opened->value().first);
  ASSERT_TRUE(opened->value().second);
  EXPECT_TRUE(opened->value().second->can_move());
}

TEST_F(SessionLanes, AClaimWithoutLanesFailsUnsupportedWithoutAskingThePeer) {
  for (const auto c : {offer_case{false, false, false}, offer_case{true, false, false},
                       offer_case{false, true, false}}) {
    SCOPED_TRACE(::testing::Message()
                 << "client offers " << c.client << ", server offers " << c.server);
    bool asked = false;
    auto pair = connect_pair(with_lanes(c.client), with_lanes(c.server),
                             [&](incoming_stream) { asked = true; });
    target claim;
    claim.resume = lane_token(1);
    auto opened = start(pair.client->open(claim));
    ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
    EXPECT_EQ(opened->value().first, make_error_code(errc::unsupported));
    EXPECT_EQ(opened->value().second, nullptr);
    ASSERT_TRUE(settle());
    EXPECT_FALSE(asked);
    EXPECT_EQ(pair.server->counters().streams_opened, 0u);
    EXPECT_FALSE(pair.client->closed());
  }
}

// A client that claims although the session has no lanes is refused, not obeyed.
TEST_F(SessionLanes, TheServerRefusesAClaimOnASessionWithoutLanes) {
  bool asked = false;
  auto peer = serve(
      with_lanes(true), [&](incoming_stream) { asked = true; }, lanes_hello(false));
  peer.raw->read_all();
  const auto text = wire::move_token_text(lane_token(9));
  peer.raw->send(wire::open{1, 0, 0, 2u << 20, text, true});
  ASSERT_TRUE(run_until([&] { return !peer.raw->all<wire::open_result>().empty(); }));
  const auto r = peer.raw->all<wire::open_result>().front();
  EXPECT_EQ(r.stream_id, 1u);
  EXPECT_EQ(r.code, static_cast<std::uint8_t>(errc::unsupported));
  EXPECT_FALSE(asked);
  EXPECT_FALSE(peer.s->closed());
}

// ---- MOVE from a raw peer --------------------------------------------------------------------

// A MOVE the session allowed: the bytes before it, then end-of-stream with its token.
TEST_F(SessionLanes, APeersMoveOnAMovableStreamEndsItsDirection) {
  std::unique_ptr<channel> held;
  auto peer = serve(
      with_lanes(true), [&](incoming_stream in) { held = in.accept(true); }, lanes_hello(true));
  peer.raw->read_all();
  peer.raw->send(wire::open{1, 0, 22, 2u << 20, "dev-1"});
  ASSERT_TRUE(run_until([&] { return held != nullptr; }));
  const auto token = lane_token(0x66);
  const std::string text = "before the move";
  peer.raw->send(wire::data{1, false, bytes_of(text)});
  peer.raw->send(wire::move{1, token});
  auto got = start(receive_all(*held));
  ASSERT_TRUE(run_until([&] { return got->has_value(); }));
  EXPECT_FALSE(got->value().first);
  EXPECT_EQ(got->value().second, text);
  ASSERT_TRUE(held->moved_away());
  EXPECT_EQ(*held->moved_away(), token);
  EXPECT_FALSE(peer.s->closed());

  // Our direction is still open, and our MOVE goes out after our bytes.
  const std::string reply = "reply";
  auto sent = start(send_then_move(*held, bytes_of(reply), token));
  ASSERT_TRUE(run_until([&] { return sent->has_value() && !peer.raw->all<wire::move>().empty(); }));
  EXPECT_FALSE(sent->value());
  const auto moves = peer.raw->all<wire::move>();
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves.front().stream_id, 1u);
  EXPECT_EQ(moves.front().token, token);
  // The MOVE is the stream's last frame, after its DATA, and no FIN goes with it.
  std::size_t data_at = 0, move_at = 0;
  for (std::size_t i = 0; i < peer.raw->frames().size(); ++i) {
    const auto& f = peer.raw->frames()[i];
    if (auto d = f.as<wire::data>(); d && d->stream_id == 1) {
      data_at = i;
      EXPECT_FALSE(d->fin) << "a FIN went out with the MOVE";
    }
    if (f.as<wire::move>()) move_at = i;
  }
  EXPECT_GT(data_at, 0u);
  EXPECT_GT(move_at, data_at);
  ASSERT_TRUE(settle());
  EXPECT_EQ(peer.s->stream_count(), 0u);
}

struct bad_move_case {
  const char* name;
  bool lanes;           // the raw client offers lanes (the server always does)
  bool accept_movable;  // how the server accepts stream 1
  std::vector<std::byte> (*violation)();
  const char* words;         // in the GOAWAY's message
  bool moved_first = false;  // a legal MOVE came before the violation
};

wire::move_token bad_move_token() {
  return lane_token(0xee);
}

const bad_move_case bad_moves[] = {
    {"OnAStreamNotAcceptedMovable", true, false,
     [] {
       return encoded({wire::move{1, bad_move_token()}});
     },
     "which may not move"},
    {"OnAStreamAcceptedMovableWithoutLanes", false, true,
     [] {
       return encoded({wire::move{1, bad_move_token()}});
     },
     "which may not move"},
    {"OnAStreamNeverOpened", true, true,
     [] {
       return encoded({wire::move{7, bad_move_token()}});
     },
     "which was never opened"},
    {"AfterFin", true, true,
     [] {
       return encoded({wire::data{1, true, {}}, wire::move{1, bad_move_token()}});
     },
     "after FIN"},
    {"Twice", true, true,
     [] {
       return encoded({wire::move{1, bad_move_token()}, wire::move{1, bad_move_token()}});
     },
     "after FIN", true},
    {"BeforeTheOpenWasAccepted", true, true,
     [] {
       return encoded({wire::open{3, 0, 22, 2u << 20, "pending"}, wire::move{3, bad_move_token()}});
     },
     "before it was accepted"},
};

class SessionLanesViolation : public SessionLanes,
                              public ::testing::WithParamInterface<bad_move_case> {};

TEST_P(SessionLanesViolation, EndsTheSessionWithAProtocolError) {
  const auto& c = GetParam();
  std::unique_ptr<channel> held;
  std::vector<incoming_stream> pending;
  auto on_open = [&](incoming_stream in) {
    if (in.target().device == "pending") return pending.push_back(std::move(in));
    held = in.accept(c.accept_movable);
  };
  auto peer = serve(with_lanes(true), on_open, lanes_hello(c.lanes));
  auto ended = start(peer.s->wait_ended());
  peer.raw->read_all();
  peer.raw->send(wire::open{1, 0, 22, 2u << 20, "dev-1"});
  ASSERT_TRUE(run_until([&] { return held != nullptr; }));
  ASSERT_TRUE(settle());
  ASSERT_FALSE(peer.s->closed());

  peer.raw->send_bytes(c.violation());
  ASSERT_TRUE(run_until([&] { return peer.raw->ended() && ended->has_value(); }));
  EXPECT_EQ(ended->value(), make_error_code(errc::protocol_error)) << ended->value().message();
  ASSERT_FALSE(peer.raw->frames().empty());
  const auto goaway = peer.raw->frames().back().as<wire::goaway>();
  ASSERT_TRUE(goaway) << "the last frame is not a GOAWAY";
  EXPECT_EQ(goaway->code, static_cast<std::uint8_t>(errc::protocol_error));
  EXPECT_NE(goaway->message.find("MOVE on stream"), std::string_view::npos)
      << "GOAWAY said '" << goaway->message << "'";
  EXPECT_NE(goaway->message.find(c.words), std::string_view::npos)
      << "GOAWAY said '" << goaway->message << "'";
  EXPECT_EQ(held->error(), make_error_code(errc::session_lost));
  EXPECT_EQ(held->moved_away().has_value(), c.moved_first);
}

INSTANTIATE_TEST_SUITE_P(Each, SessionLanesViolation, ::testing::ValuesIn(bad_moves),
                         [](const auto& param) { return std::string(param.param.name); });

}  // namespace
}  // namespace lanes_session
}  // namespace tether::mux
