#pragma once
// The completion token for coroutines that handle errors as values:
// `auto [ec, n] = co_await sock.async_read_some(buf, use_tuple);`

#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

namespace tether {
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
}  // namespace tether
