// Lanes on the wire (docs/PROTOCOL.md, "Moving a stream"): the lanes flag of HELLO and
// WELCOME, the movable flag of OPEN_RESULT, the resume flag of OPEN (whose device is a move
// token in hex) and the MOVE frame, with the limits the decoder holds them to.

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "raw_frame.hpp"
#include "tether/wire/codec.hpp"

namespace tether::wire {
namespace lanes_codec {
namespace {

// The byte of a frame's header that holds its flags (3 bytes length, 1 byte type).
constexpr std::size_t flags_at = 4;

std::vector<std::byte> encode_one(const frame& f) {
  std::vector<std::byte> out;
  encode(f, out);
  return out;
}

// 00 11 22 ... ff: every nibble, so hex digits a-f show up in its text.
move_token counting_token() {
  move_token t{};
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::byte>(i * 0x11);
  return t;
}

// A token with its own bytes, to tell two tokens apart.
move_token token_of(std::uint8_t seed) {
  move_token t{};
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::byte>(seed + 7 * i);
  return t;
}

// Decodes `bytes`, which must hold exactly one whole frame of type T. The frame refers into
// `bytes`: keep them while it is used.
template <class T>
T decode_whole(const std::vector<std::byte>& bytes) {
  const auto r = decode(bytes);
  EXPECT_EQ(r.status, decode_status::complete) << r.reason;
  EXPECT_EQ(r.consumed, bytes.size());
  const auto* f = std::get_if<T>(&r.value);
  EXPECT_NE(f, nullptr) << "decoded frame index " << r.value.index();
  return f ? *f : T{};
}

using testing::raw_frame;

// The payload of an OPEN: proto, port, window 65536, then the device with its length.
std::vector<std::uint8_t> open_payload(std::uint8_t proto, std::uint16_t port,
                                       std::string_view device) {
  std::vector<std::uint8_t> p{proto, std::uint8_t(port >> 8),    std::uint8_t(port), 0, 1, 0,
                              0,     std::uint8_t(device.size())};
  p.insert(p.end(), device.begin(), device.end());
  return p;
}

std::vector<std::uint8_t> token_payload(std::size_t n) {
  std::vector<std::uint8_t> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = std::uint8_t(0xa0 + i);
  return p;
}

const std::string counting_text = "00112233445566778899aabbccddeeff";

// ---- round trips -------------------------------------------------------------------------

TEST(CodecLanes, HelloCarriesTheLanesFlagBothWays) {
  for (const bool lanes : {false, true}) {
    SCOPED_TRACE(lanes ? "with lanes" : "without lanes");
    const auto bytes = encode_one(hello{1, role::client, 16u << 20, 2u << 20, "tt_secret", lanes});
    EXPECT_EQ(bytes[flags_at], std::byte(lanes ? flag_lanes : 0));
    const auto h = decode_whole<hello>(bytes);
    EXPECT_EQ(h.lanes, lanes);
    EXPECT_EQ(h.version, 1);
    EXPECT_EQ(h.role, role::client);
    EXPECT_EQ(h.session_window, 16u << 20);
    EXPECT_EQ(h.stream_window, 2u << 20);
    EXPECT_EQ(h.token, "tt_secret");
  }
}

TEST(CodecLanes, WelcomeCarriesTheLanesFlagBothWays) {
  for (const bool lanes : {false, true}) {
    SCOPED_TRACE(lanes ? "with lanes" : "without lanes");
    const auto bytes = encode_one(welcome{1, 8u << 20, 1u << 20, 15000, lanes});
    EXPECT_EQ(bytes[flags_at], std::byte(lanes ? flag_lanes : 0));
    const auto w = decode_whole<welcome>(bytes);
    EXPECT_EQ(w.lanes, lanes);
    EXPECT_EQ(w.session_window, 8u << 20);
    EXPECT_EQ(w.stream_window, 1u << 20);
    EXPECT_EQ(w.keepalive_ms, 15000u);
  }
}

// A peer that predates lanes sends no flags: the fields read false, as before.
TEST(CodecLanes, FramesWithoutFlagsReadAsBefore) {
  EXPECT_FALSE(
      decode_whole<hello>(raw_frame(0, 0, 0, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0})).lanes);
  EXPECT_TRUE(
      decode_whole<hello>(raw_frame(0, flag_lanes, 0, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0}))
          .lanes);
  EXPECT_FALSE(decode_whole<open_result>(raw_frame(4, 0, 1, {0, 0, 0, 0, 1, 0, 0})).movable);
  EXPECT_FALSE(decode_whole<open>(raw_frame(3, 0, 1, open_payload(0, 22, "dev-1"))).resume);
}

TEST(CodecLanes, OpenResultCarriesTheMovableFlag) {
  for (const bool movable : {false, true}) {
    SCOPED_TRACE(movable ? "movable" : "not movable");
    const auto bytes = encode_one(open_result{5, 0, 2u << 20, "", movable});
    EXPECT_EQ(bytes[flags_at], std::byte(movable ? flag_movable : 0));
    const auto o = decode_whole<open_result>(bytes);
    EXPECT_EQ(o.movable, movable);
    EXPECT_EQ(o.stream_id, 5u);
    EXPECT_EQ(o.code, 0);
    EXPECT_EQ(o.window, 2u << 20);
  }
}

TEST(CodecLanes, OpenResumeCarriesTheTokenAsLowerCaseHex) {
  const auto token = counting_token();
  const auto text = move_token_text(token);
  ASSERT_EQ(text, counting_text);
  const auto bytes = encode_one(open{7, 0, 0, 65536, text, true});
  EXPECT_EQ(bytes[flags_at], std::byte(flag_resume));
  const auto o = decode_whole<open>(bytes);
  EXPECT_TRUE(o.resume);
  EXPECT_EQ(o.stream_id, 7u);
  EXPECT_EQ(o.proto, 0);
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.window, 65536u);
  EXPECT_EQ(o.device, counting_text);
  const auto back = parse_move_token(o.device);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, token);
}

// Without the resume flag the same 32 hex digits are a device id like any other.
TEST(CodecLanes, HexDigitsWithoutTheResumeFlagNameADevice) {
  const auto bytes = encode_one(open{9, 0, 22, 65536, counting_text, false});
  const auto o = decode_whole<open>(bytes);  // refers into `bytes`
  EXPECT_FALSE(o.resume);
  EXPECT_EQ(o.port, 22);
  EXPECT_EQ(o.device, counting_text);
}

TEST(CodecLanes, MoveRoundTrips) {
  for (const std::uint32_t id : {1u, 2u, 0x7fffffffu, 0xffffffffu}) {
    const auto token = token_of(static_cast<std::uint8_t>(id));
    const auto bytes = encode_one(move{id, token});
    ASSERT_EQ(bytes.size(), header_size + move_token_size);
    EXPECT_EQ(bytes[3], std::byte(static_cast<std::uint8_t>(frame_type::move)));
    EXPECT_EQ(bytes[3], std::byte(11));
    EXPECT_EQ(bytes[flags_at], std::byte(0));
    const auto m = decode_whole<move>(bytes);
    EXPECT_EQ(m.stream_id, id);
    EXPECT_EQ(m.token, token);
  }
}

// The new frames, like the old, decode whole from every split of a stream of them.
TEST(CodecLanes, LanesFramesDecodeWhenFedInTwoPiecesAtEveryOffset) {
  const auto token = counting_token();
  const auto text = move_token_text(token);
  std::vector<std::byte> all;
  encode(hello{1, role::client, 65536, 65536, "t", true}, all);
  encode(welcome{1, 65536, 65536, 0, true}, all);
  encode(open{3, 0, 0, 65536, text, true}, all);
  encode(open_result{3, 0, 65536, "", true}, all);
  encode(move{3, token}, all);
  encode(move{4, token_of(9)}, all);
  const std::size_t expected_frames = 6;

  for (std::size_t split = 0; split <= all.size(); ++split) {
    std::vector<std::byte> buf(all.begin(), all.begin() + split);
    std::size_t fed = split;
    std::vector<std::size_t> kinds;
    for (;;) {
      const auto r = decode(buf);
      if (r.status == decode_status::complete) {
        kinds.push_back(r.value.index());
        if (const auto* m = std::get_if<move>(&r.value); m && m->stream_id == 3) {
          ASSERT_EQ(m->token, token) << "split " << split;
        }
        if (const auto* o = std::get_if<open>(&r.value)) {
          ASSERT_TRUE(o->resume) << "split " << split;
          ASSERT_EQ(o->device, text) << "split " << split;
        }
        buf.erase(buf.begin(), buf.begin() + r.consumed);
        continue;
      }
      ASSERT_EQ(r.status, decode_status::need_more) << "split " << split << ": " << r.reason;
      if (fed == all.size()) break;
      buf.insert(buf.end(), all.begin() + fed, all.end());
      fed = all.size();
    }
    ASSERT_EQ(kinds.size(), expected_frames) << "split " << split;
    EXPECT_EQ(kinds[4], frame(move{}).index());
    EXPECT_EQ(kinds[5], frame(move{}).index());
    EXPECT_TRUE(buf.empty());
  }
}

// ---- what the decoder refuses ------------------------------------------------------------

struct bad_lanes_frame {
  const char* name;
  std::vector<std::byte> bytes;
};

std::vector<bad_lanes_frame> bad_lanes_frames() {
  std::string upper = counting_text;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string non_hex = counting_text;
  non_hex[5] = 'g';
  const std::uint8_t move_type = 11, open_type = 3;
  return {
      {"MOVE with a 15-byte token", raw_frame(move_type, 0, 1, token_payload(15))},
      {"MOVE with a 17-byte token", raw_frame(move_type, 0, 1, token_payload(17))},
      {"MOVE with no token", raw_frame(move_type, 0, 1, {})},
      {"MOVE with flag 0x1", raw_frame(move_type, 0x1, 1, token_payload(16))},
      {"MOVE with flag 0x2", raw_frame(move_type, 0x2, 1, token_payload(16))},
      {"MOVE with flag 0x80", raw_frame(move_type, 0x80, 1, token_payload(16))},
      {"MOVE on stream 0", raw_frame(move_type, 0, 0, token_payload(16))},
      {"OPEN resume with a non-hex token",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 0, non_hex))},
      {"OPEN resume with an upper-case token",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 0, upper))},
      {"OPEN resume with 31 digits",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 0, counting_text.substr(0, 31)))},
      {"OPEN resume with 33 digits",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 0, counting_text + "0"))},
      {"OPEN resume with 30 digits, two bytes short of a token",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 0, counting_text.substr(0, 30)))},
      {"OPEN resume with no token", raw_frame(open_type, flag_resume, 1, open_payload(0, 0, ""))},
      {"OPEN resume with a device id",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 0, "dev-1"))},
      {"OPEN resume with a port",
       raw_frame(open_type, flag_resume, 1, open_payload(0, 22, counting_text))},
      {"OPEN resume of a UDP stream",
       raw_frame(open_type, flag_resume, 1, open_payload(1, 0, counting_text))},
      {"OPEN resume of a catalog stream",
       raw_frame(open_type, flag_resume, 1, open_payload(2, 0, counting_text))},
  };
}

TEST(CodecLanes, RejectsMalformedLanesFramesWhateverTheSplit) {
  for (const auto& c : bad_lanes_frames()) {
    const auto r = decode(c.bytes);
    ASSERT_EQ(r.status, decode_status::error) << c.name;
    EXPECT_EQ(r.error, errc::protocol_error) << c.name << ": " << r.reason;
    EXPECT_STRNE(r.reason, "") << c.name;
    for (std::size_t cut = 0; cut < c.bytes.size(); ++cut) {
      ASSERT_NE(decode(std::span(c.bytes).first(cut)).status, decode_status::complete)
          << c.name << " cut " << cut;
    }
  }
}

// The frames just beside the refused ones decode: the limits are exact.
TEST(CodecLanes, TheFramesNextToTheRefusedOnesDecode) {
  const auto m = decode_whole<move>(raw_frame(11, 0, 1, token_payload(16)));
  EXPECT_EQ(m.stream_id, 1u);
  EXPECT_EQ(m.token[0], std::byte(0xa0));
  EXPECT_EQ(m.token[15], std::byte(0xaf));
  const auto o =
      decode_whole<open>(raw_frame(3, flag_resume, 1, open_payload(0, 0, counting_text)));
  EXPECT_TRUE(o.resume);
}

// ---- the token's text ----------------------------------------------------------------------

TEST(CodecLanes, MoveTokenTextIsLowerCaseHexAndParsesBack) {
  EXPECT_EQ(move_token_text(counting_token()), counting_text);
  EXPECT_EQ(move_token_text(move_token{}), std::string(32, '0'));
  move_token ones;
  ones.fill(std::byte{0xff});
  EXPECT_EQ(move_token_text(ones), std::string(32, 'f'));

  for (const auto& t : {counting_token(), move_token{}, ones, token_of(3), token_of(200)}) {
    const auto text = move_token_text(t);
    EXPECT_EQ(text.size(), 2 * move_token_size);
    EXPECT_EQ(text.find_first_not_of("0123456789abcdef"), std::string::npos) << text;
    const auto back = parse_move_token(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(*back, t);
  }
}

TEST(CodecLanes, ParseMoveTokenRefusesAnythingElse) {
  std::string upper = counting_text;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_FALSE(parse_move_token(upper));
  std::string one_upper = counting_text;
  one_upper[31] = 'F';
  EXPECT_FALSE(parse_move_token(one_upper));
  EXPECT_FALSE(parse_move_token(""));
  EXPECT_FALSE(parse_move_token(counting_text.substr(0, 31)));
  EXPECT_FALSE(parse_move_token(counting_text + "0"));
  EXPECT_FALSE(parse_move_token(counting_text + counting_text));
  for (const char bad : {'g', 'G', ' ', '-', 'x', '\0', ':', '/', '@', '`'}) {
    std::string s = counting_text;
    s[10] = bad;
    EXPECT_FALSE(parse_move_token(s)) << "with '" << bad << "'";
  }
  std::string prefixed = "0x" + counting_text.substr(2);
  EXPECT_FALSE(parse_move_token(prefixed));
}

}  // namespace
}  // namespace lanes_codec
}  // namespace tether::wire
