// A peer that breaks the protocol ends its session, and is told why: every violation goes
// out as a GOAWAY naming it before the connection closes, and every stream of the session
// fails with session_lost. A bad first frame is answered with a REFUSE in the decoder's words.

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::encoded;
using testing::nothing;
using testing::session_fixture;

// DATA payloads up to one frame, from one buffer that outlives every test.
std::span<const std::byte> payload(std::size_t n) {
  static const std::vector<std::byte> bytes(wire::max_data_payload, std::byte{'x'});
  return std::span(bytes).first(n);
}

wire::open open_frame(std::uint32_t id, std::string_view device = "dev-1",
                      std::uint32_t window = 2u << 20) {
  return wire::open{id, 0, 22, window, device};
}

// `total` bytes of DATA on `id`, in full frames.
std::vector<std::byte> data_frames(std::uint32_t id, std::size_t total) {
  std::vector<std::byte> out;
  while (total > 0) {
    const auto n = std::min(total, wire::max_data_payload);
    wire::encode(wire::data{id, false, payload(n)}, out);
    total -= n;
  }
  return out;
}

std::vector<std::byte> concat(std::initializer_list<std::vector<std::byte>> parts) {
  std::vector<std::byte> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// One way to break the protocol. The raw client has opened stream 1 (accepted, never read:
// the bystander that must fail with session_lost), then sends `setup`, which is legal, and
// then `violation`.
struct violation_case {
  const char* name;
  std::vector<std::byte> (*setup)();
  std::vector<std::byte> (*violation)();
  errc code;
  const char* words;  // in the GOAWAY's message
  std::uint32_t stream_window = 2u << 20;
  std::uint32_t session_window = 16u << 20;
  std::uint32_t hello_session_window = 16u << 20;  // what the raw client grants the session
  std::size_t streams_after_setup = 1;
};

const violation_case cases[] = {
    {"DataOnAStreamNeverOpened", nothing,
     [] {
       return encoded({wire::data{7, false, payload(1)}});
     },
     errc::protocol_error, "DATA on stream 7, which was never opened"},
    {"DataBeforeTheOpenWasAccepted", [] { return encoded({open_frame(3, "pending")}); },
     [] {
       return encoded({wire::data{3, false, payload(1)}});
     },
     errc::protocol_error, "DATA on stream 3 before it was accepted", 2u << 20, 16u << 20,
     16u << 20, 2},
    {"DataAfterFin",
     [] {
       return encoded({wire::data{1, true, {}}});
     },
     [] {
       return encoded({wire::data{1, false, payload(1)}});
     },
     errc::protocol_error, "DATA on stream 1 after FIN"},
    // Both sides finished stream 3: the session forgot it, and still knows DATA on it is wrong.
    {"DataAfterFinOnAForgottenStream",
     [] {
       return encoded({open_frame(3, "finish"), wire::data{3, true, {}}});
     },
     [] {
       return encoded({wire::data{3, false, payload(1)}});
     },
     errc::protocol_error, "DATA on stream 3 after FIN"},
    {"OpenWithAnIdBelowTheLast", [] { return encoded({open_frame(5)}); },
     [] { return encoded({open_frame(3)}); }, errc::protocol_error,
     "OPEN with a stream id out of order (3)", 2u << 20, 16u << 20, 16u << 20, 2},
    {"OpenWithTheSameIdAgain", nothing, [] { return encoded({open_frame(1)}); },
     errc::protocol_error, "OPEN with a stream id out of order (1)"},
    {"OpenWithTheServersParity", nothing, [] { return encoded({open_frame(4)}); },
     errc::protocol_error, "OPEN with a stream id out of order (4)"},
    {"OpenResultNobodyAskedFor", nothing,
     [] {
       return encoded({wire::open_result{2, 0, 65536, ""}});
     },
     errc::protocol_error, "OPEN_RESULT for stream 2, which was never opened"},
    {"OpenResultForThePeersOwnStream", nothing,
     [] {
       return encoded({wire::open_result{1, 0, 65536, ""}});
     },
     errc::protocol_error, "OPEN_RESULT for stream 1, which was never opened"},
    {"WindowUpdateForAStreamNeverOpened", nothing,
     [] {
       return encoded({wire::window_update{9, 1}});
     },
     errc::protocol_error, "WINDOW_UPDATE for stream 9, which was never opened"},
    {"ResetForAStreamNeverOpened", nothing,
     [] {
       return encoded({wire::reset{9, 13, "bye"}});
     },
     errc::protocol_error, "RESET for stream 9, which was never opened"},
    {"PingAckNobodyAskedFor", nothing,
     [] {
       return encoded({wire::ping{true, 1}});
     },
     errc::protocol_error, "PING ACK nobody asked for"},
    {"HelloAfterTheHandshake", nothing,
     [] {
       return encoded({wire::hello{1, wire::role::client, 65536, 65536, "good"}});
     },
     errc::protocol_error, "handshake frame after the handshake"},
    {"WelcomeAfterTheHandshake", nothing,
     [] {
       return encoded({wire::welcome{1, 65536, 65536, 0}});
     },
     errc::protocol_error, "handshake frame after the handshake"},
    {"UnknownFrameType", nothing,
     [] {
       return std::vector<std::byte>{std::byte{0},    std::byte{0}, std::byte{0},
                                     std::byte{0x20}, std::byte{0}, std::byte{0},
                                     std::byte{0},    std::byte{0}, std::byte{0}};
     },
     errc::protocol_error, "unknown frame type"},
    {"FrameLongerThanTheProtocolAllows", nothing,
     [] {
       return std::vector<std::byte>{std::byte{0x01}, std::byte{0x00}, std::byte{0x01},
                                     std::byte{5}};
     },
     errc::frame_too_large, "frame length above 64 KiB"},
    {"PingOnAStream", nothing,
     [] {
       auto b = encoded({wire::ping{false, 1}});
       b[8] = std::byte{1};  // stream id 1
       return b;
     },
     errc::protocol_error, "session frame on a stream"},

    // Flow control. A window used up exactly is fine; one byte more ends the session.
    {"DataBeyondTheStreamWindow", [] { return data_frames(1, 64 * 1024); },
     [] { return data_frames(1, 1); }, errc::flow_control_error, "peer exceeded a stream window",
     64 * 1024, 1u << 20},
    {"DataBeyondTheSessionWindow",
     [] {
       return concat(
           {encoded({open_frame(3)}), data_frames(1, 64 * 1024), data_frames(3, 64 * 1024)});
     },
     [] { return data_frames(3, 1); }, errc::flow_control_error, "peer exceeded the session window",
     1u << 20, 128 * 1024, 16u << 20, 2},
    // Stream 3 opened with a window of 2^31-2: one more byte of credit is the most there is.
    {"WindowUpdateAboveTheLargestStreamWindow",
     [] {
       return encoded({open_frame(3, "dev-1", wire::max_window - 1), wire::window_update{3, 1}});
     },
     [] {
       return encoded({wire::window_update{3, 1}});
     },
     errc::flow_control_error, "stream window above 2^31-1", 2u << 20, 16u << 20, 16u << 20, 2},
    {"WindowUpdateAboveTheLargestSessionWindow",
     [] {
       return encoded({wire::window_update{0, 1}});
     },
     [] {
       return encoded({wire::window_update{0, 1}});
     },
     errc::flow_control_error, "session window above 2^31-1", 2u << 20, 16u << 20,
     wire::max_window - 1},
};

class SessionViolation : public session_fixture,
                         public ::testing::WithParamInterface<violation_case> {};

TEST_P(SessionViolation, EndsTheSessionWithAGoawayAndFailsEveryStream) {
  const auto& c = GetParam();
  session_settings settings;
  settings.stream_window = c.stream_window;
  settings.session_window = c.session_window;
  std::vector<std::unique_ptr<channel>> held;  // accepted, never read
  std::vector<incoming_stream> pending;        // never answered
  auto on_open = [&](incoming_stream in) {
    const auto device = in.target().device;
    if (device == "pending") return pending.push_back(std::move(in));
    auto ch = in.accept();
    if (device != "finish") return held.push_back(std::move(ch));
    // Half-closes at once, then reads to the peer's FIN: the stream ends cleanly.
    asio::co_spawn(
        ex(),
        [ch = std::move(ch)]() -> asio::awaitable<void> {
          co_await ch->send_eof();
          for (;;) {
            auto [ec, bytes] = co_await ch->receive();
            if (ec || bytes.empty()) co_return;
            ch->consumed(bytes.size());
          }
        },
        asio::detached);
  };
  auto [s, raw, to_session, to_raw] =
      serve(settings, on_open, client_hello(c.hello_session_window));
  auto ended = start(s->wait_ended());
  raw->read_all();

  raw->send(open_frame(1));
  raw->send_bytes(c.setup());
  ASSERT_TRUE(settle());
  ASSERT_FALSE(s->closed()) << "the setup alone ended the session";
  ASSERT_FALSE(held.empty());
  EXPECT_EQ(s->stream_count(), c.streams_after_setup);

  raw->send_bytes(c.violation());
  ASSERT_TRUE(run_until([&, &raw = raw] { return raw->ended() && ended->has_value(); }));

  EXPECT_EQ(ended->value(), make_error_code(c.code)) << ended->value().message();
  EXPECT_FALSE(raw->read_error()) << "the session closed without an orderly end: "
                                  << raw->read_error().message();
  // The GOAWAY is the last thing the session said.
  ASSERT_FALSE(raw->frames().empty());
  const auto goaway = raw->frames().back().as<wire::goaway>();
  ASSERT_TRUE(goaway) << "the last frame is not a GOAWAY";
  EXPECT_EQ(goaway->code, static_cast<std::uint8_t>(c.code));
  EXPECT_NE(goaway->message.find(c.words), std::string_view::npos)
      << "GOAWAY said '" << goaway->message << "'";
  EXPECT_EQ(raw->all<wire::goaway>().size(), 1u);

  for (auto& ch : held) {
    EXPECT_EQ(ch->error(), make_error_code(errc::session_lost));
    auto credit = start(ch->wait_send_credit());
    ASSERT_TRUE(run_until([&] { return credit->has_value(); }));
    EXPECT_EQ(credit->value().first, make_error_code(errc::session_lost));
  }
  EXPECT_EQ(s->stream_count(), 0u);
  target t{"dev-1", 22, protocol::tcp};
  auto opened = start(s->open(t));
  ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
  EXPECT_EQ(opened->value().first, make_error_code(errc::session_lost));
}

INSTANTIATE_TEST_SUITE_P(Each, SessionViolation, ::testing::ValuesIn(cases),
                         [](const auto& param) { return std::string(param.param.name); });

// ---- the first frame --------------------------------------------------------------------

struct bad_hello_case {
  const char* name;
  std::vector<std::byte> (*bytes)();
  errc code;
  const char* words;  // the REFUSE's whole message
};

std::vector<std::byte> hello_with(std::size_t offset, std::uint8_t value) {
  auto b = encoded({wire::hello{1, wire::role::client, 65536, 65536, "good"}});
  b[wire::header_size + offset] = std::byte{value};
  return b;
}

const bad_hello_case bad_hellos[] = {
    {"HttpRequest",
     [] {
       const std::string_view r = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
       auto p = reinterpret_cast<const std::byte*>(r.data());
       return std::vector<std::byte>(p, p + r.size());
     },
     errc::frame_too_large, "bad HELLO: frame length above 64 KiB"},
    {"UnknownFrameType",
     [] {
       return std::vector<std::byte>{std::byte{0}, std::byte{0}, std::byte{0}, std::byte{42}};
     },
     errc::protocol_error, "bad HELLO: unknown frame type"},
    {"UnknownRole", [] { return hello_with(2, 7); }, errc::protocol_error,
     "bad HELLO: unknown role"},
    {"SessionWindowZero",
     [] {
       return encoded({wire::hello{1, wire::role::client, 0, 65536, "good"}});
     },
     errc::protocol_error, "bad HELLO: window out of range"},
    {"StreamWindowAboveTheLargest",
     [] {
       return encoded({wire::hello{1, wire::role::client, 65536, 0x80000000u, "good"}});
     },
     errc::protocol_error, "bad HELLO: window out of range"},
    {"TokenLongerThanAllowed",
     [] {
       auto b = encoded({wire::hello{1, wire::role::client, 65536, 65536, "good"}});
       const std::size_t token_length_at = wire::header_size + 2 + 1 + 4 + 4;
       b[token_length_at] = std::byte{0x04};  // 1025
       b[token_length_at + 1] = std::byte{0x01};
       return b;
     },
     errc::frame_too_large, "bad HELLO: token too long"},
    {"HelloOnAStream",
     [] {
       auto b = encoded({wire::hello{1, wire::role::client, 65536, 65536, "good"}});
       b[8] = std::byte{3};
       return b;
     },
     errc::protocol_error, "bad HELLO: session frame on a stream"},
    {"PingFirst",
     [] {
       return encoded({wire::ping{false, 1}});
     },
     errc::protocol_error, "expected HELLO"},
    {"VersionTwo",
     [] {
       return encoded({wire::hello{2, wire::role::client, 65536, 65536, "good"}});
     },
     errc::version_mismatch, "this server speaks version 1"},
};

class SessionBadHello : public session_fixture,
                        public ::testing::WithParamInterface<bad_hello_case> {};

TEST_P(SessionBadHello, IsRefusedWithTheDecodersWords) {
  const auto& c = GetParam();
  auto pipe = testing::make_bounded_pipe(ex(), 0);
  auto s = track(session::make(std::move(pipe.a), session_settings{}));
  auto raw = track(testing::frame_peer::make(std::move(pipe.b)));
  bool asked = false;
  auto result = start(s->start_server(
      [&](wire::role, std::string_view, std::string&) {
        asked = true;
        return errc::ok;
      },
      {}));
  raw->send_bytes(c.bytes());
  raw->read_all();
  ASSERT_TRUE(run_until([&] { return result->has_value() && raw->ended(); }));
  EXPECT_EQ(result->value(), make_error_code(c.code)) << result->value().message();
  EXPECT_FALSE(asked) << "a bad HELLO reached the authenticator";
  EXPECT_EQ(s->refusal(), c.words);
  ASSERT_EQ(raw->frames().size(), 1u);
  const auto refuse = raw->frames()[0].as<wire::refuse>();
  ASSERT_TRUE(refuse) << "expected REFUSE";
  EXPECT_EQ(refuse->code, static_cast<std::uint8_t>(c.code));
  EXPECT_EQ(refuse->message, c.words);
  EXPECT_FALSE(raw->read_error()) << raw->read_error().message();
}

INSTANTIATE_TEST_SUITE_P(Each, SessionBadHello, ::testing::ValuesIn(bad_hellos),
                         [](const auto& param) { return std::string(param.param.name); });

}  // namespace
}  // namespace tether::mux
