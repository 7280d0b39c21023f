#pragma once
// Dialing the port a stream is for: the server toward a device it reaches directly, an
// agent toward a port on its own device. TCP connects; UDP connects a socket (which sends
// nothing: it fixes the peer and lets the kernel report "port unreachable").

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tether/errc.hpp"

namespace tether::relay {

/// Resolves `host` (a name or an IP literal) within `timeout`. A literal needs no resolver:
/// Asio resolves on a thread of its own, a round trip between threads on every stream.
/// Errors: the resolver's, or asio::error::timed_out.
asio::awaitable<std::pair<asio::error_code, std::vector<asio::ip::address>>> resolve_host(
    asio::any_io_executor ex, const std::string& host, std::chrono::milliseconds timeout);

/// Connects `sock` to `host`:`port`, resolving included, within `timeout` (then
/// asio::error::timed_out); the connect error of the last address otherwise.
asio::awaitable<asio::error_code> dial_tcp(asio::ip::tcp::socket& sock, const std::string& host,
                                           std::uint16_t port, std::chrono::milliseconds timeout);

/// Opens `sock` and connects it to `host`:`port` (resolving bounded by `timeout`).
asio::awaitable<asio::error_code> connect_udp(asio::ip::udp::socket& sock, const std::string& host,
                                              std::uint16_t port,
                                              std::chrono::milliseconds timeout);

/// The reason a client is given for a failed dial: refused, timed_out, internal (out of
/// descriptors) or unreachable.
errc dial_failure(const asio::error_code& ec) noexcept;

/// What the client is told of a failed dial: what failed, not where the device lives.
std::string dial_failure_text(const asio::error_code& ec);

}  // namespace tether::relay
