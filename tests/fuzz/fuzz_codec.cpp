// Fuzzes the frame decoder with arbitrary bytes, read as a stream of frames the way a
// session reads its input. For every frame that decodes, the encoder must produce bytes that
// decode to the same frame, and those bytes must be canonical: every proper prefix of them
// is need_more, and encoding the result again gives the same bytes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include "tether/wire/codec.hpp"

namespace {

using namespace tether::wire;
namespace wire = tether::wire;  // `open` alone would also name POSIX open()

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_codec: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// Frames hold views: compare their contents, field by field.
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
        else if constexpr (std::is_same_v<T, wire::open>)
          return x.stream_id == y.stream_id && x.proto == y.proto && x.port == y.port &&
                 x.window == y.window && x.device == y.device && x.resume == y.resume;
        else if constexpr (std::is_same_v<T, wire::open_result>)
          return x.stream_id == y.stream_id && x.code == y.code && x.window == y.window &&
                 x.message == y.message && x.movable == y.movable;
        else if constexpr (std::is_same_v<T, data>)
          return x.stream_id == y.stream_id && x.fin == y.fin && same_bytes(x.payload, y.payload);
        else if constexpr (std::is_same_v<T, window_update>)
          return x.stream_id == y.stream_id && x.increment == y.increment;
        else if constexpr (std::is_same_v<T, reset>)
          return x.stream_id == y.stream_id && x.code == y.code && x.message == y.message;
        else if constexpr (std::is_same_v<T, ping>)
          return x.ack == y.ack && x.opaque == y.opaque;
        else if constexpr (std::is_same_v<T, wire::datagram>)
          return x.stream_id == y.stream_id && same_bytes(x.payload, y.payload);
        else if constexpr (std::is_same_v<T, wire::move>)
          return x.stream_id == y.stream_id && x.token == y.token;
        else
          return x.last_stream_id == y.last_stream_id && x.code == y.code && x.message == y.message;
      },
      a);
}

// What the protocol promises about a decoded frame beyond "it parsed".
void check_bounds(const frame& f) {
  std::visit(
      [](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, hello>) {
          check(x.token.size() <= max_token, "HELLO token above max_token");
          check(x.role == role::client || x.role == role::agent, "HELLO with an unknown role");
        } else if constexpr (std::is_same_v<T, wire::open>) {
          if (x.resume)
            check(x.proto == 0 && x.port == 0 && parse_move_token(x.device).has_value(),
                  "a claim OPEN without a move token");
          else if (x.proto == stream_protocol_catalog)
            check(x.device.empty() && x.port == 0, "a catalog OPEN names a device or port");
          else
            check(x.proto <= 1 && valid_device_id(x.device), "OPEN with an invalid target");
          check(x.stream_id != 0, "OPEN on stream 0");
        } else if constexpr (std::is_same_v<T, data>) {
          check(x.payload.size() <= max_data_payload, "DATA above max_data_payload");
          check(x.stream_id != 0, "DATA on stream 0");
        } else if constexpr (std::is_same_v<T, wire::move>) {
          check(x.stream_id != 0, "MOVE on stream 0");
        } else if constexpr (std::is_same_v<T, wire::datagram>) {
          check(x.payload.size() <= max_datagram, "DATAGRAM above max_datagram");
          check(x.stream_id != 0, "DATAGRAM on stream 0");
        } else if constexpr (std::is_same_v<T, window_update>) {
          check(x.increment >= 1 && x.increment <= max_window, "WINDOW_UPDATE out of range");
        } else if constexpr (std::is_same_v<T, refuse> || std::is_same_v<T, reset> ||
                             std::is_same_v<T, goaway> || std::is_same_v<T, wire::open_result>) {
          check(x.message.size() <= max_message, "message above max_message");
        }
      },
      f);
}

void check_frame(std::span<const std::byte> input, const decode_result& r) {
  check(r.consumed >= header_size && r.consumed <= input.size(), "consumed out of range");
  check(r.consumed <= header_size + max_payload, "frame above the maximum size");
  check_bounds(r.value);

  // The frame depends on its own bytes only.
  const auto alone = decode(input.first(r.consumed));
  check(alone.status == decode_status::complete && alone.consumed == r.consumed &&
            same(alone.value, r.value),
        "a frame decodes differently without the bytes after it");

  std::vector<std::byte> bytes;
  encode(r.value, bytes);
  const auto again = decode(bytes);
  check(again.status == decode_status::complete, "re-encoded frame does not decode");
  check(again.consumed == bytes.size(), "re-encoded frame decodes to another length");
  check(same(again.value, r.value), "re-encoded frame decodes to another frame");

  std::vector<std::byte> twice;
  encode(again.value, twice);
  check(same_bytes(bytes, twice), "encoding is not canonical");

  for (std::size_t n = 0; n < bytes.size(); ++n) {
    const auto part = decode(std::span<const std::byte>(bytes).first(n));
    check(part.status == decode_status::need_more, "a prefix of a valid frame is not need_more");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  while (!input.empty()) {
    const auto r = decode(input);
    if (r.status == decode_status::need_more) {
      check(r.consumed == 0, "need_more consumed bytes");
      if (input.size() >= header_size) {
        const std::size_t len = (std::to_integer<std::size_t>(input[0]) << 16) |
                                (std::to_integer<std::size_t>(input[1]) << 8) |
                                std::to_integer<std::size_t>(input[2]);
        check(input.size() < header_size + len, "need_more with the whole frame present");
      }
      break;
    }
    if (r.status == decode_status::error) {
      check(r.consumed == 0, "an error consumed bytes");
      check(r.error == tether::errc::protocol_error || r.error == tether::errc::frame_too_large,
            "an error other than protocol_error or frame_too_large");
      check(r.reason != nullptr && *r.reason != '\0', "an error without a reason");
      break;
    }
    check_frame(input, r);
    input = input.subspan(r.consumed);
  }
  return 0;
}
