#pragma once
// Giving the other work of an event loop its turn.
//
// Our I/O fast paths complete without waiting whenever they can: a read finds bytes in the
// socket, a write fits in the kernel, credit is there. A coroutine whose every operation
// completes that way never suspends, and holds its thread for as long as the bulk lasts.
// Measured with four bulk streams and a 1-byte ping-pong on one session: each bulk uplink
// ran its whole 2 MiB window (8 reads and writes of 256 KiB) before the next got the
// thread, and the ping-pong's answer, in the socket all along, waited 10–14 ms for the
// read loop to be run. A loop that has just done a big piece of work yields before the next.

#include <asio/awaitable.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace tether::mux {

/// Completes after the handlers that were ready before it have run, on the caller's own
/// executor: a post to the back of its queue, so I/O that became ready meanwhile is picked
/// up first.
inline asio::awaitable<void> yield_turn() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

}  // namespace tether::mux
