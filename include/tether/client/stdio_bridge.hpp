#pragma once
// Standard input and output relayed to one tunnelled stream, for `tether connect --stdio`
// (OpenSSH's ProxyCommand): the bytes a program writes to our stdin go to the device port,
// and what the device sends comes out of our stdout, with half-close passed on both ways.

#include <asio/awaitable.hpp>
#include <asio/error_code.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <cstdint>

#include "tether/mux/channel.hpp"
#include "tether/relay/buffer_pool.hpp"

namespace tether::client {

struct stdio_bridge_result {
  std::uint64_t to_channel = 0;    // bytes read from `in` and sent on the channel
  std::uint64_t from_channel = 0;  // bytes received on the channel and written to `out`
  // The first failure, or empty when both directions ended cleanly.
  asio::error_code error;
  enum class side { none, channel, input, output } failed = side::none;
};

/// Copies `in` → `ch` and `ch` → `out` at once, until both directions have ended.
///
/// - EOF on `in` becomes the channel's half-close (send_eof); the channel is still read to
///   its end.
/// - The channel's end (the device half-closed) closes `out`, so its reader sees EOF; `in`
///   is still relayed until its own EOF (the device may still be reading).
/// - A failure ends both directions: the channel failing (reset by the device, the session
///   lost) stops reading `in`; a local read or write error resets the channel.
/// - The channel fails only when it is used; once the device half-closed, nothing may use
///   it for a long time (stdin silent). Whoever watches the session cancels `in` and `out`
///   when it ends, and the bridge then ends with the channel's error.
///
/// `in` and `out` may be pipes, terminals, sockets, or regular files and /dev/null (which
/// never block and are read and written as they are). Asio switches them to non-blocking
/// mode, which is shared with every process holding the same open file (a shell's terminal,
/// say): their file status flags are put back as they were before `out` is closed and
/// before this returns. Completes without throwing. Call from the channel's executor;
/// `in`, `out` and `ch` must outlive the call.
asio::awaitable<stdio_bridge_result> bridge_stdio(asio::posix::stream_descriptor& in,
                                                  asio::posix::stream_descriptor& out,
                                                  mux::channel& ch, relay::buffer_pool& pool);

/// Cancels what waits on `d`: it completes with operation_aborted. Nothing if `d` is closed.
void stop_waiting(asio::posix::stream_descriptor& d) noexcept;

}  // namespace tether::client
