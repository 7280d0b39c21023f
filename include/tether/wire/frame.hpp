#pragma once
// The frames of the tether tunnel protocol (docs/PROTOCOL.md) as plain values.
// Decoded frames refer to the bytes they were decoded from (string_view / span): they are
// valid only as long as the input buffer is.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace tether::wire {

inline constexpr std::uint16_t protocol_version = 1;
inline constexpr std::size_t header_size = 9;
inline constexpr std::size_t max_payload = 65536;
inline constexpr std::size_t max_data_payload = 16384;
// The largest UDP payload over IPv4; a DATAGRAM frame carries one whole datagram.
inline constexpr std::size_t max_datagram = 65507;
inline constexpr std::size_t max_token = 1024;
inline constexpr std::size_t max_device_id = 64;
inline constexpr std::size_t max_message = 1024;
inline constexpr std::uint32_t max_window = 0x7fffffff;

enum class frame_type : std::uint8_t {
  hello = 0,
  welcome = 1,
  refuse = 2,
  open = 3,
  open_result = 4,
  data = 5,
  window_update = 6,
  reset = 7,
  ping = 8,
  goaway = 9,
  datagram = 10,
  move = 11,
};
inline constexpr std::uint8_t max_frame_type = 11;

inline constexpr std::uint8_t flag_fin = 0x1;  // DATA
inline constexpr std::uint8_t flag_ack = 0x1;  // PING
// Lanes (docs/PROTOCOL.md, "Moving a stream"). Peers that predate them ignore these flags.
inline constexpr std::uint8_t flag_lanes = 0x2;    // HELLO, WELCOME: streams may move
inline constexpr std::uint8_t flag_movable = 0x2;  // OPEN_RESULT: this stream may move
inline constexpr std::uint8_t flag_resume = 0x2;   // OPEN: claims a moved stream
inline constexpr std::uint8_t flag_bulk_lane = 0x4;  // HELLO: a client's second session

// A moved stream's claim: chosen at random by the side that moves it.
inline constexpr std::size_t move_token_size = 16;
using move_token = std::array<std::byte, move_token_size>;

enum class role : std::uint8_t { client = 0, agent = 1 };

struct hello {
  std::uint16_t version = protocol_version;
  wire::role role = role::client;
  std::uint32_t session_window = 0;
  std::uint32_t stream_window = 0;
  std::string_view token;
  bool lanes = false;
  bool bulk_lane = false;  // the client's bulk lane, beside its first session
};

struct welcome {
  std::uint16_t version = protocol_version;
  std::uint32_t session_window = 0;
  std::uint32_t stream_window = 0;
  std::uint32_t keepalive_ms = 0;
  bool lanes = false;
};

struct refuse {
  std::uint8_t code = 0;
  std::string_view message;
};

// OPEN's protocol byte: 0 tcp, 1 udp, 2 catalog (the devices the credential may reach).
inline constexpr std::uint8_t stream_protocol_catalog = 2;
inline constexpr std::uint8_t max_stream_protocol = 2;

struct open {
  std::uint32_t stream_id = 0;
  std::uint8_t proto = 0;  // 0 tcp, 1 udp, 2 catalog (empty device, port 0)
  std::uint16_t port = 0;
  std::uint32_t window = 0;
  std::string_view device;  // with `resume`: the move token, 32 lower-case hex digits
  bool resume = false;
};

struct open_result {
  std::uint32_t stream_id = 0;
  std::uint8_t code = 0;
  std::uint32_t window = 0;
  std::string_view message;
  bool movable = false;
};

struct data {
  std::uint32_t stream_id = 0;
  bool fin = false;
  std::span<const std::byte> payload;
};

// One whole UDP datagram on a stream opened with protocol udp (possibly empty).
struct datagram {
  std::uint32_t stream_id = 0;
  std::span<const std::byte> payload;
};

struct window_update {
  std::uint32_t stream_id = 0;  // 0: the session
  std::uint32_t increment = 0;
};

struct reset {
  std::uint32_t stream_id = 0;
  std::uint8_t code = 0;
  std::string_view message;
};

// The sender's direction of the stream continues on another session of the same client,
// which claims it with `token`; like FIN, nothing of the stream follows it from that side.
struct move {
  std::uint32_t stream_id = 0;
  move_token token{};
};

struct ping {
  bool ack = false;
  std::uint64_t opaque = 0;
};

struct goaway {
  std::uint32_t last_stream_id = 0;
  std::uint8_t code = 0;
  std::string_view message;
};

using frame = std::variant<hello, welcome, refuse, open, open_result, data, window_update, reset,
                           ping, goaway, datagram, move>;

// True if a device id is 1-64 characters of [A-Za-z0-9._-].
bool valid_device_id(std::string_view id) noexcept;

// A move token as OPEN carries it (32 lower-case hex digits), and back; nullopt for
// anything else.
std::string move_token_text(const move_token& t);
std::optional<move_token> parse_move_token(std::string_view text) noexcept;

}  // namespace tether::wire
