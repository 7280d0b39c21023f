#pragma once
// The forwarding engine's core: a local TCP socket spliced to a tunnelled channel.

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <cstdint>

#include "tether/mux/channel.hpp"
#include "tether/relay/buffer_pool.hpp"

namespace tether::relay {

struct splice_result {
  std::uint64_t to_channel = 0;    // bytes read from the socket and sent on the channel
  std::uint64_t from_channel = 0;  // bytes received on the channel and written to the socket
  asio::error_code error;          // first failure, or empty if both directions ended cleanly
};

/// Copies `sock` → `ch` and `ch` → `sock` at once until both directions have ended.
/// EOF on one side becomes a half-close on the other (FIN / shutdown(SHUT_WR)); a failure on
/// either side resets the other (RESET frame / TCP RST) and ends both directions.
/// Completes without throwing; the socket is closed on return.
asio::awaitable<splice_result> splice(asio::ip::tcp::socket& sock, mux::channel& ch,
                                      buffer_pool& pool);

/// Closes `sock` so its peer sees a reset, not an orderly end: for a stream that failed, or
/// never opened, a clean EOF would pass for a complete transfer.
void abort_socket(asio::ip::tcp::socket& sock);

/// TCP_NODELAY on and non-blocking mode, as splice() expects of its socket.
void prepare_socket(asio::ip::tcp::socket& sock);

}  // namespace tether::relay
