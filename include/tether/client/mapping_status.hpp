#pragma once
// What a running proxy says about its mappings, and why a change to them was refused: the
// vocabulary shared by client::proxy, the control socket and `tether map`. Plain data.

#include <chrono>
#include <cstdint>
#include <string>

#include "tether/mux/tunnel.hpp"

namespace tether::client {

enum class mapping_state : std::uint8_t {
  listening,     // bound, and a tunnel session is up
  session_down,  // bound; connections wait for the session (up to --wait-for-session)
  failed,        // bound, but its last stream could not be opened (see `error`)
};

struct mapping_status {
  std::string name;
  std::string server;  // the proxy's server, "host:port"
  std::string local;   // "127.0.0.1:2222", the real port when 0 was asked for
  std::string device;
  std::uint16_t device_port = 0;
  mux::protocol proto = mux::protocol::tcp;
  mapping_state state = mapping_state::listening;
  std::string error;  // why, when failed
  // Open TCP connections, or UDP flows (one per local source address).
  std::uint64_t connections = 0;
  // TCP connections accepted, or UDP flows opened, over the mapping's life.
  std::uint64_t total = 0;
  // Bytes toward the device and back. TCP: counted live, as the relay hands bytes to the
  // tunnel and delivers them to the local socket. UDP: payload bytes of the datagrams.
  std::uint64_t bytes_out = 0;
  std::uint64_t bytes_in = 0;
  // UDP only: datagrams each way and dropped (any reason).
  std::uint64_t datagrams_out = 0;
  std::uint64_t datagrams_in = 0;
  std::uint64_t dropped = 0;
  std::chrono::system_clock::time_point since;  // when it started listening
};

/// Why a control request was refused. The control protocol carries these as the strings of
/// control_errc_name() (docs/CONTROL.md).
enum class control_errc : std::uint8_t {
  none,
  bad_request,     // not a request: malformed JSON, unknown op, missing or mistyped field
  bad_spec,        // the mapping spec or name does not parse (the words of -L / -U)
  duplicate_name,  // a mapping of that name exists
  in_use,          // the local address is taken
  cannot_listen,   // any other reason the local address could not be bound
  not_found,       // no mapping by that name or local address
  ambiguous,       // a bare port that several mappings listen on
  check_failed,    // add with check: the server or the device refused the probe stream
  unknown_server,  // several servers in this process and `server` named none of them
  shutting_down,   // the client is stopping
  busy,            // too many control connections at once
  forbidden,       // the peer is another user
};

const char* control_errc_name(control_errc e) noexcept;

/// A refusal with its words ("127.0.0.1:2222 is in use"); code none means success.
struct mapping_failure {
  control_errc code = control_errc::none;
  std::string message;
  explicit operator bool() const noexcept { return code != control_errc::none; }
};

}  // namespace tether::client
