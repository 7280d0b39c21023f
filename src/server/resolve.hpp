#pragma once
// The addresses of a device, for the upstreams that dial it.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace tether::server {

/// Resolves `host` (a name or an IP literal) within `timeout`. A literal needs no resolver:
/// Asio resolves on a thread of its own, a round trip between threads on every stream.
/// Errors: the resolver's, or asio::error::timed_out.
asio::awaitable<std::pair<asio::error_code, std::vector<asio::ip::address>>> resolve_device(
    asio::any_io_executor ex, const std::string& host, std::chrono::milliseconds timeout);

}  // namespace tether::server
