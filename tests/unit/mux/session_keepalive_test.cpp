// Keepalive: a session pings a quiet peer, ends one that stays silent for three intervals,
// answers every PING with the same opaque bytes and accepts only the ACKs it asked for.

#include <gtest/gtest.h>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::seen_frame;
using testing::session_fixture;

using SessionKeepalive = session_fixture;

session_settings with_keepalive(std::chrono::milliseconds interval) {
  session_settings s;
  s.keepalive = interval;
  return s;
}

TEST_F(SessionKeepalive, ASilentPeerEndsTheSessionAsTimedOut) {
  const auto interval = std::chrono::milliseconds(50);
  const auto began = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<channel>> held;
  auto [s, raw, to_session, to_raw] =
      serve(with_keepalive(interval), [&](incoming_stream in) { held.push_back(in.accept()); });
  auto ended = start(s->wait_ended());
  raw->read_all();  // reads, never answers
  raw->send(wire::open{1, 0, 22, 65536, "dev-1"});
  ASSERT_TRUE(run_until([&] { return ended->has_value(); }, std::chrono::seconds(10)));
  const auto took = std::chrono::steady_clock::now() - began;

  EXPECT_EQ(ended->value(), make_error_code(errc::timed_out)) << ended->value().message();
  EXPECT_GE(took, 3 * interval) << "ended before three intervals of silence";
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0]->error(), make_error_code(errc::session_lost));
  ASSERT_TRUE(run_until([&, &raw = raw] { return raw->ended(); }));
  // Whatever it sent meanwhile were PINGs numbered from 1.
  std::uint64_t expect = 1;
  for (const auto& p : raw->all<wire::ping>()) {
    EXPECT_FALSE(p.ack);
    EXPECT_EQ(p.opaque, expect++);
  }
}

TEST_F(SessionKeepalive, APeerThatAnswersPingsKeepsTheSession) {
  const auto interval = std::chrono::milliseconds(100);
  auto [s, raw, to_session, to_raw] = serve(with_keepalive(interval), {});
  auto ended = start(s->wait_ended());
  auto* peer = raw.get();
  raw->read_all([peer](const seen_frame& f) {
    if (auto p = f.as<wire::ping>(); p && !p->ack) peer->send(wire::ping{true, p->opaque});
  });
  // Six pings answered: twice as long as silence would have been allowed.
  ASSERT_TRUE(run_until(
      [&, &raw = raw] { return raw->all<wire::ping>().size() >= 6 || ended->has_value(); }));
  EXPECT_FALSE(ended->has_value()) << ended->value().message();
  EXPECT_FALSE(s->closed());
}

TEST_F(SessionKeepalive, PingIsAnsweredWithTheSameOpaque) {
  auto [s, raw, to_session, to_raw] = serve({}, {});
  raw->read_all();
  const std::uint64_t values[] = {0x0123456789abcdefu, 0, ~std::uint64_t{0}, 7};
  for (auto v : values) raw->send(wire::ping{false, v});
  ASSERT_TRUE(
      run_until([&, &raw = raw] { return raw->all<wire::ping>().size() == std::size(values); }));
  const auto acks = raw->all<wire::ping>();
  for (std::size_t i = 0; i < std::size(values); ++i) {
    EXPECT_TRUE(acks[i].ack);
    EXPECT_EQ(acks[i].opaque, values[i]);
  }
  ASSERT_TRUE(settle());
  EXPECT_FALSE(s->closed());
}

// The session's own PING may be acknowledged once; the same ACK again was asked by nobody.
TEST_F(SessionKeepalive, ASecondAckOfTheSamePingIsAViolation) {
  auto [s, raw, to_session, to_raw] = serve(with_keepalive(std::chrono::milliseconds(100)), {});
  auto ended = start(s->wait_ended());
  raw->read_all();
  ASSERT_TRUE(run_until([&, &raw = raw] { return !raw->all<wire::ping>().empty(); }));
  const auto first = raw->all<wire::ping>()[0];
  ASSERT_FALSE(first.ack);
  raw->send(wire::ping{true, first.opaque});
  ASSERT_TRUE(settle());
  ASSERT_FALSE(s->closed()) << "an ACK of the session's own PING was refused";

  raw->send(wire::ping{true, first.opaque});
  ASSERT_TRUE(run_until([&, &raw = raw] { return ended->has_value() && raw->ended(); }));
  EXPECT_EQ(ended->value(), make_error_code(errc::protocol_error));
  const auto goaway = raw->frames().back().as<wire::goaway>();
  ASSERT_TRUE(goaway);
  EXPECT_EQ(goaway->code, static_cast<std::uint8_t>(errc::protocol_error));
  EXPECT_EQ(goaway->message, "PING ACK nobody asked for");
}

// A client keeps the interval the server asks for in WELCOME.
TEST_F(SessionKeepalive, AClientUsesTheIntervalFromWelcome) {
  session_settings settings;
  settings.keepalive = std::chrono::seconds(60);  // would outlast the test
  auto [s, raw, to_session, to_raw] = dial(settings, wire::welcome{1, 1u << 20, 1u << 20, 50});
  auto ended = start(s->wait_ended());
  raw->read_all();
  ASSERT_TRUE(run_until([&] { return ended->has_value(); }, std::chrono::seconds(10)));
  EXPECT_EQ(ended->value(), make_error_code(errc::timed_out));
}

}  // namespace
}  // namespace tether::mux
