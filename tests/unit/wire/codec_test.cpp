#include "tether/wire/codec.hpp"

#include "raw_frame.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace tether::wire {
namespace {

std::vector<std::byte> encoded(const frame& f) {
  std::vector<std::byte> out;
  encode(f, out);
  return out;
}

std::span<const std::byte> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

const std::string big_payload(16384, 'x');
const std::string biggest_datagram(max_datagram, 'd');

std::vector<frame> samples() {
  return {
      hello{1, role::client, 16u << 20, 2u << 20, "tt_secret"},
      hello{1, role::agent, 1, max_window, ""},
      welcome{1, 8u << 20, 1u << 20, 15000},
      refuse{6, "authentication failed: token rejected"},
      open{1, 0, 22, 2u << 20, "dev-42"},
      open{7, 1, 53, 65536, std::string_view("a", 1)},
      open{9, stream_protocol_catalog, 0, 65536, ""},
      open_result{1, 0, 2u << 20, ""},
      open_result{3, 3, 0, "connection refused by the device"},
      data{1, false, bytes_of("hello")},
      data{5, true, {}},
      data{9, true, bytes_of(big_payload)},
      window_update{0, 12345},
      window_update{3, max_window},
      reset{11, 13, "stream reset by peer"},
      ping{false, 0x0102030405060708ull},
      ping{true, 42},
      goaway{99, 12, "server is shutting down"},
      datagram{7, bytes_of("dns query")},
      datagram{9, {}},
      datagram{11, bytes_of(biggest_datagram)},
  };
}

// Compares two frames field by field (frames hold views, so compare their contents).
bool same(const frame& a, const frame& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        const auto& y = std::get<T>(b);
        if constexpr (std::is_same_v<T, hello>)
          return x.version == y.version && x.role == y.role &&
                 x.session_window == y.session_window && x.stream_window == y.stream_window &&
                 x.token == y.token && x.lanes == y.lanes && x.bulk_lane == y.bulk_lane;
        else if constexpr (std::is_same_v<T, welcome>)
          return x.version == y.version && x.session_window == y.session_window &&
                 x.stream_window == y.stream_window && x.keepalive_ms == y.keepalive_ms &&
                 x.lanes == y.lanes;
        else if constexpr (std::is_same_v<T, refuse>)
          return x.code == y.code && x.message == y.message;
        else if constexpr (std::is_same_v<T, open>)
          return x.stream_id == y.stream_id && x.proto == y.proto && x.port == y.port &&
                 x.window == y.window && x.device == y.device && x.resume == y.resume;
        else if constexpr (std::is_same_v<T, open_result>)
          return x.stream_id == y.stream_id && x.code == y.code && x.window == y.window &&
                 x.message == y.message && x.movable == y.movable;
        else if constexpr (std::is_same_v<T, data>)
          return x.stream_id == y.stream_id && x.fin == y.fin &&
                 std::equal(x.payload.begin(), x.payload.end(), y.payload.begin(),
                            y.payload.end());
        else if constexpr (std::is_same_v<T, window_update>)
          return x.stream_id == y.stream_id && x.increment == y.increment;
        else if constexpr (std::is_same_v<T, reset>)
          return x.stream_id == y.stream_id && x.code == y.code && x.message == y.message;
        else if constexpr (std::is_same_v<T, ping>)
          return x.ack == y.ack && x.opaque == y.opaque;
        else if constexpr (std::is_same_v<T, datagram>)
          return x.stream_id == y.stream_id &&
                 std::equal(x.payload.begin(), x.payload.end(), y.payload.begin(),
                            y.payload.end());
        else if constexpr (std::is_same_v<T, move>)
          return x.stream_id == y.stream_id && x.token == y.token;
        else
          return x.last_stream_id == y.last_stream_id && x.code == y.code &&
                 x.message == y.message;
      },
      a);
}

TEST(Codec, RoundTripsEveryFrameType) {
  for (const auto& f : samples()) {
    const auto bytes = encoded(f);
    const auto r = decode(bytes);
    ASSERT_EQ(r.status, decode_status::complete) << r.reason;
    EXPECT_EQ(r.consumed, bytes.size());
    EXPECT_TRUE(same(f, r.value)) << "frame index " << f.index();
  }
}

TEST(Codec, EveryPrefixNeedsMore) {
  for (const auto& f : samples()) {
    const auto bytes = encoded(f);
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
      const auto r = decode(std::span(bytes).first(cut));
      ASSERT_EQ(r.status, decode_status::need_more) << "index " << f.index() << " cut " << cut;
    }
  }
}

TEST(Codec, StreamOfFramesDecodesWhenFedInPiecesAtEveryOffset) {
  std::vector<std::byte> all;
  for (const auto& f : samples()) encode(f, all);
  const auto expected = samples();
  for (std::size_t split = 1; split < all.size(); ++split) {
    // Feed the bytes in two pieces: [0, split) then the rest, as a session reader would.
    std::vector<std::byte> buf(all.begin(), all.begin() + split);
    std::size_t fed = split, n = 0;
    for (;;) {
      const auto r = decode(buf);
      if (r.status == decode_status::complete) {
        ASSERT_LT(n, expected.size());
        ASSERT_TRUE(same(expected[n], r.value)) << "split " << split << " frame " << n;
        ++n;
        buf.erase(buf.begin(), buf.begin() + r.consumed);
        continue;
      }
      ASSERT_EQ(r.status, decode_status::need_more) << r.reason;
      if (fed == all.size()) break;
      buf.insert(buf.end(), all.begin() + fed, all.end());
      fed = all.size();
    }
    ASSERT_EQ(n, expected.size());
    ASSERT_TRUE(buf.empty());
  }
}

using testing::raw_frame;

struct malformed_case {
  const char* name;
  std::vector<std::byte> bytes;
  errc expected;
};

std::vector<malformed_case> malformed() {
  std::vector<std::uint8_t> big_data(16385, 0);
  std::vector<std::uint8_t> big_datagram(max_datagram + 1, 0);
  return {
      {"length above 64 KiB", raw_frame(65537, 5, 0, 1, {}), errc::frame_too_large},
      {"unknown type", raw_frame(42, 0, 0, {}), errc::protocol_error},
      {"hello on a stream", raw_frame(0, 0, 1, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0}),
       errc::protocol_error},
      {"hello short", raw_frame(0, 0, 0, {0, 1, 0}), errc::protocol_error},
      {"hello zero window", raw_frame(0, 0, 0, {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}),
       errc::protocol_error},
      {"hello token too long", raw_frame(0, 0, 0, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0x04, 0x01}),
       errc::frame_too_large},
      {"hello unknown role", raw_frame(0, 0, 0, {0, 1, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0}),
       errc::protocol_error},
      {"hello trailing", raw_frame(0, 0, 0, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 9}),
       errc::protocol_error},
      {"data on stream 0", raw_frame(5, 0, 0, {1, 2}), errc::protocol_error},
      {"data too large", raw_frame(5, 0, 1, big_data), errc::frame_too_large},
      {"data unknown flag", raw_frame(5, 0x80, 1, {1}), errc::protocol_error},
      {"datagram on stream 0", raw_frame(10, 0, 0, {1}), errc::protocol_error},
      {"datagram above 65,507 bytes", raw_frame(10, 0, 1, big_datagram), errc::frame_too_large},
      {"datagram with a flag", raw_frame(10, 1, 1, {1}), errc::protocol_error},
      {"type 11", raw_frame(11, 0, 1, {}), errc::protocol_error},
      {"open bad device", raw_frame(3, 0, 1, {0, 0, 22, 0, 0, 1, 0, 2, 'a', ' '}), errc::protocol_error},
      {"open empty device", raw_frame(3, 0, 1, {0, 0, 22, 0, 0, 1, 0, 0}), errc::protocol_error},
      {"open bad proto", raw_frame(3, 0, 1, {9, 0, 22, 0, 0, 1, 0, 1, 'a'}), errc::protocol_error},
      {"catalog open with a device", raw_frame(3, 0, 1, {2, 0, 0, 0, 0, 1, 0, 1, 'a'}),
       errc::protocol_error},
      {"catalog open with a port", raw_frame(3, 0, 1, {2, 0, 22, 0, 0, 1, 0, 0}), errc::protocol_error},
      {"open device length past end", raw_frame(3, 0, 1, {0, 0, 22, 0, 0, 1, 0, 5, 'a'}),
       errc::protocol_error},
      {"window update zero", raw_frame(6, 0, 1, {0, 0, 0, 0}), errc::protocol_error},
      {"window update too big", raw_frame(6, 0, 1, {0x80, 0, 0, 0}), errc::protocol_error},
      {"reset message too long", raw_frame(7, 0, 1, {13, 0x04, 0x01}), errc::frame_too_large},
      {"ping on stream", raw_frame(8, 0, 3, {0, 0, 0, 0, 0, 0, 0, 0}), errc::protocol_error},
      {"ping short", raw_frame(8, 0, 0, {0, 0, 0}), errc::protocol_error},
      {"goaway on stream", raw_frame(9, 0, 1, {0, 0, 0, 0, 12, 0, 0}), errc::protocol_error},
      {"open_result on stream 0", raw_frame(4, 0, 0, {0, 0, 0, 0, 1, 0, 0}), errc::protocol_error},
  };
}

TEST(Codec, RejectsMalformedFramesWhateverTheSplit) {
  for (const auto& c : malformed()) {
    const auto r = decode(c.bytes);
    ASSERT_EQ(r.status, decode_status::error) << c.name;
    EXPECT_EQ(r.error, c.expected) << c.name << ": " << r.reason;
    EXPECT_STRNE(r.reason, "") << c.name;
    // A prefix either waits for more or already fails; it never yields a frame.
    for (std::size_t cut = 0; cut < c.bytes.size(); ++cut) {
      ASSERT_NE(decode(std::span(c.bytes).first(cut)).status, decode_status::complete)
          << c.name << " cut " << cut;
    }
  }
}

TEST(Codec, OversizeLengthFailsBeforeThePayloadArrives) {
  const auto bytes = raw_frame(0xffffff, 5, 0, 1, {});
  EXPECT_EQ(decode(std::span(bytes).first(3)).status, decode_status::error);
}

TEST(Codec, RandomBytesNeverCrashOrOverread) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> buf(rng() % 64);
    for (auto& b : buf) b = std::byte(rng());
    const auto r = decode(buf);
    if (r.status == decode_status::complete) {
      EXPECT_LE(r.consumed, buf.size());
    }
  }
}

TEST(Codec, DeviceIds) {
  EXPECT_TRUE(valid_device_id("dev-42"));
  EXPECT_TRUE(valid_device_id("link12345"));
  EXPECT_TRUE(valid_device_id("a.b_c-D"));
  EXPECT_FALSE(valid_device_id(""));
  EXPECT_FALSE(valid_device_id("has space"));
  EXPECT_FALSE(valid_device_id("dev:22"));
  EXPECT_FALSE(valid_device_id(std::string(65, 'a')));
}

}  // namespace
}  // namespace tether::wire
