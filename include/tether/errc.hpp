#pragma once
// tether's own error codes. Expected outcomes travel as asio::error_code values built from
// these; the wire carries the same numbers in OPEN_RESULT, RESET, REFUSE and GOAWAY frames.

#include <asio/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace tether {

enum class errc : std::uint8_t {
  ok = 0,
  unknown_device = 1,      // the server has no device with that id
  forbidden = 2,           // the credential's ACL does not allow device:port
  refused = 3,             // the device refused the connection
  unreachable = 4,         // no route to the device / agent not connected
  timed_out = 5,           // the device did not answer in time
  bad_token = 6,           // hello refused: unknown or wrong token
  protocol_error = 7,      // malformed or out-of-order frame
  flow_control_error = 8,  // peer sent more than its credit
  frame_too_large = 9,     // a length above the protocol's bounds
  version_mismatch = 10,   // hello with a version we do not speak
  too_many_streams = 11,   // per-session stream limit reached
  going_away = 12,         // session ends gracefully (GOAWAY)
  stream_reset = 13,       // the peer reset the stream (application: local socket failed)
  session_lost = 14,       // the session under the stream ended
  internal = 15,           // a bug or resource exhaustion on the peer
  unsupported = 16,        // e.g. UDP over a transport that cannot carry it
  ssh_forwarding_denied = 17,  // the SSH server refused the direct-tcpip channel
  untrusted_host = 18,         // the server's SSH host key is unknown or changed
  limit_reached = 19,          // a server limit (sessions, streams, handshakes) was reached
};

const std::error_category& tether_category() noexcept;

inline asio::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), tether_category()};
}

// A short, plain-words description ("unknown device", "connection refused", ...).
const char* describe(errc e) noexcept;

// The code's name for scripts and metric labels: "unknown_device", "forbidden", ...
const char* errc_name(errc e) noexcept;

// How many codes there are (0 to errc_count - 1), e.g. to count outcomes by code.
inline constexpr std::size_t errc_count = 20;

// Converts a code received on the wire; unknown numbers become errc::internal.
errc errc_from_wire(std::uint8_t v) noexcept;

}  // namespace tether

template <>
struct std::is_error_code_enum<tether::errc> : std::true_type {};
