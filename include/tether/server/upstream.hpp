#pragma once
// Where the bytes of an accepted stream go (DESIGN.md, "Routing"): a TCP connection to a
// direct device, a UDP flow, and later a stream on an agent's session or an API message.
// The server asks the router for one per stream, connects it, and relays through it.

#include <asio/awaitable.hpp>
#include <asio/error_code.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "tether/errc.hpp"
#include "tether/mux/channel.hpp"
#include "tether/relay/datagram.hpp"
#include "tether/relay/detached_socket.hpp"
#include "tether/wire/frame.hpp"

namespace tether::server {

/// Why a stream cannot be served: the code and words the client gets, and what the
/// server's own log says (which may name the device's address; the client's words do not).
struct refusal {
  errc code = errc::internal;
  std::string message;
  std::string log_detail;  // empty: the log says `message`
};

struct relay_outcome {
  std::uint64_t bytes_to_device = 0;
  std::uint64_t bytes_from_device = 0;
  relay::datagram_counters datagrams;  // UDP flows only
  asio::error_code error;              // why it ended, or empty for a clean end
  // The client moved the stream to another of its sessions (docs/PROTOCOL.md, "Lanes"):
  // the connection to the device, for the session that claims `token`.
  std::optional<wire::move_token> moved;
  relay::detached_socket connection;
};

class upstream {
 public:
  virtual ~upstream() = default;

  /// Connects toward the target (dials the device port, opens the flow's socket). Called
  /// once, before the stream is accepted; on failure the stream is refused with the result.
  virtual asio::awaitable<std::optional<refusal>> connect() = 0;

  /// Relays between the accepted stream and the target until both are done. Never throws.
  virtual asio::awaitable<relay_outcome> relay(mux::channel& ch) = 0;

  /// Lanes: whether the client may move this stream to another of its sessions, and the
  /// connection it then takes along. Only a direct device's TCP port can move.
  virtual bool movable() const noexcept { return false; }
  /// Instead of connect(): goes on with a connection a moved stream left behind.
  virtual void adopt(relay::detached_socket connection) { (void)connection; }

  /// Ends a relay() in progress soon, as if the device had reset the connection: for an API
  /// message whose wait for a reply is over while the device neither sends nor closes (a
  /// relay ends by itself when its channel fails, except while it only waits on the device).
  virtual void abort() {}
};

}  // namespace tether::server
