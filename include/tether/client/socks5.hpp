#pragma once
// The server side of SOCKS5 (RFC 1928) as `connect -D` speaks it: no authentication, the
// CONNECT command only, and the requested host name is the device id (an IP address is
// taken as a device address, for ssh:// servers). `curl --socks5-hostname 127.0.0.1:1080
// http://dev-42/` reaches port 80 of dev-42 through the tunnel.
//
// What a local client sends is bounded: a greeting of at most 257 bytes, a request of at
// most 262, and both within `handshake_timeout`.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "tether/errc.hpp"
#include "tether/mux/tunnel.hpp"

namespace tether::client::socks5 {

/// Reply codes (RFC 1928 section 6).
enum class reply : std::uint8_t {
  succeeded = 0x00,
  general_failure = 0x01,
  not_allowed = 0x02,
  network_unreachable = 0x03,
  host_unreachable = 0x04,
  connection_refused = 0x05,
  ttl_expired = 0x06,
  command_not_supported = 0x07,
  address_type_not_supported = 0x08,
};

/// The reply that tells a SOCKS client why its stream could not be opened.
reply reply_for(errc why) noexcept;

/// A parsed greeting: whether "no authentication" (0x00) is among the offered methods.
/// nullopt: not a SOCKS5 greeting. `bytes` must be the whole greeting.
std::optional<bool> parse_greeting(std::span<const std::uint8_t> bytes);

/// A parsed CONNECT request, or the reply that refuses it.
struct request {
  mux::target target;  // device (a host name, or an IP address as text) and port
  reply refusal = reply::succeeded;
};

/// Parses a whole request (VER CMD RSV ATYP DST.ADDR DST.PORT).
request parse_request(std::span<const std::uint8_t> bytes);

/// Reads the greeting, answers it, and reads the request. Returns the target, or nullopt
/// after having answered a refusal (or when the client sent something else, went away or
/// took longer than `timeout`), the socket then to be closed.
asio::awaitable<std::optional<mux::target>> accept_request(asio::ip::tcp::socket& sock,
                                                           std::chrono::milliseconds timeout);

/// Sends the final reply to the request (BND.ADDR 0.0.0.0:0: the tunnel has no address the
/// client could use). Returns false if the client has gone.
asio::awaitable<bool> send_reply(asio::ip::tcp::socket& sock, reply r);

}  // namespace tether::client::socks5
