#pragma once
// What the local proxy opens channels on: a tether session over TLS, or an SSH session.
// The client's listeners and the relay only see this interface.

#include <asio/awaitable.hpp>
#include <asio/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tether/mux/channel.hpp"
#include "tether/wire/frame.hpp"

namespace tether::mux {

// catalog: a byte stream on which the server sends the devices and ports the session's
// credential may reach (docs/PROTOCOL.md), then ends it; its target has no device or port.
enum class protocol : std::uint8_t { tcp = 0, udp = 1, catalog = 2 };

/// How many protocols there are: counters indexed by protocol have this many.
inline constexpr std::size_t protocol_count = 3;

/// "tcp", "udp" or "catalog": for logs, JSON and metric labels.
constexpr const char* protocol_name(protocol p) noexcept {
  switch (p) {
    case protocol::tcp:
      return "tcp";
    case protocol::udp:
      return "udp";
    case protocol::catalog:
      return "catalog";
  }
  return "unknown";
}

/// The protocol a user names for a port: "tcp" or "udp", exactly (not "TCP"), from a config
/// file, an ACL rule, a flag, a JSON body or a stored row; nullopt for anything else.
/// "catalog" is refused too: the client opens the catalog itself and no user names it, so
/// every caller may take what this returns as a port to forward to.
constexpr std::optional<protocol> protocol_from_name(std::string_view name) noexcept {
  if (name == "tcp") return protocol::tcp;
  if (name == "udp") return protocol::udp;
  return std::nullopt;
}

struct target {
  std::string device;  // device id (tether) or host name (SSH direct-tcpip)
  std::uint16_t port = 0;
  protocol proto = protocol::tcp;
  // A claim of a stream moved from another session of the same client (docs/PROTOCOL.md,
  // "Lanes"): no device or port, a TCP stream that continues where it left off.
  std::optional<wire::move_token> resume;
};

class tunnel {
 public:
  virtual ~tunnel() = default;

  /// Opens one channel to `t`. Fails with a tether::errc saying why (unknown_device,
  /// forbidden, refused, timed_out, unreachable, ssh_forwarding_denied, session_lost...).
  /// The returned channel keeps what it needs of the session alive; it may outlive the
  /// tunnel object, and then fails with errc::session_lost.
  virtual asio::awaitable<std::pair<asio::error_code, std::unique_ptr<channel>>> open(
      target t) = 0;

  /// The peer's own words for the refusal of the open() that completed last ("unknown device
  /// 'dev-9'"), for messages and logs; empty when it gave none or that open was not refused
  /// by the peer. Read it right after open() returns, before anything else awaits.
  virtual std::string last_open_error() const { return {}; }

  /// Completes when the session has ended, with the reason.
  virtual asio::awaitable<asio::error_code> wait_closed() = 0;

  /// Ends the session now; open channels fail with errc::session_lost.
  virtual void close() = 0;
};

}  // namespace tether::mux
