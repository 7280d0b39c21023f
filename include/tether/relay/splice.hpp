#pragma once
// The forwarding engine's core: a local TCP socket spliced to a tunnelled channel.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>

#include "tether/mux/channel.hpp"
#include "tether/relay/buffer_pool.hpp"

namespace tether::relay {

struct splice_result {
  std::uint64_t to_channel = 0;    // bytes read from the socket and sent on the channel
  std::uint64_t from_channel = 0;  // bytes received on the channel and written to the socket
  asio::error_code error;          // first failure, or empty if both directions ended cleanly
  // Lanes (docs/PROTOCOL.md): the stream left this channel for another session, claimed
  // with `token`. Every byte received before the move was written to the socket, and every
  // byte read from it was sent; the socket is left open for the relay that goes on.
  bool moved = false;
  wire::move_token token{};
};

/// When the side that opened a stream moves it to its bulk lane: once it carries
/// `bulk_bytes` in either direction within `bulk_period`, if the channel can move and
/// `lane_ready()` says a lane is there to take it.
struct move_policy {
  std::uint64_t bulk_bytes = 1u << 20;
  std::chrono::milliseconds bulk_period{1000};
  std::function<bool()> lane_ready;
};

/// Copies `sock` → `ch` and `ch` → `sock` at once until both directions have ended.
/// EOF on one side becomes a half-close on the other (FIN / shutdown(SHUT_WR)); a failure on
/// either side resets the other (RESET frame / TCP RST) and ends both directions.
///
/// Moves: with a `policy` (the client), a stream that turns bulk stops reading its socket,
/// sends MOVE, delivers what the peer sends until its answer, and returns moved. Without
/// one (the server), a peer's MOVE stops the reading once everything before it was
/// written; the splice returns moved, and its caller answers with send_move() once the
/// socket is where the claim will find it.
///
/// Completes without throwing; the socket is closed on return unless the stream moved.
asio::awaitable<splice_result> splice(asio::ip::tcp::socket& sock, mux::channel& ch,
                                      buffer_pool& pool, const move_policy* policy = nullptr);

/// Closes `sock` so its peer sees a reset, not an orderly end: for a stream that failed, or
/// never opened, a clean EOF would pass for a complete transfer.
void abort_socket(asio::ip::tcp::socket& sock);

/// TCP_NODELAY on and non-blocking mode, as splice() expects of its socket.
void prepare_socket(asio::ip::tcp::socket& sock);

}  // namespace tether::relay
