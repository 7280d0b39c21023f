#pragma once
// The ordered, reliable byte stream a session runs over: a TLS connection in production,
// an in-memory or plain TCP pipe in tests. mux never sees which.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error_code.hpp>
#include <cstddef>
#include <string>
#include <utility>

namespace tether::mux {

class byte_stream {
 public:
  virtual ~byte_stream() = default;

  virtual asio::any_io_executor get_executor() = 0;

  /// Reads at least one byte into `buf`. Completes with asio::error::eof at the orderly end.
  /// At most one read and one write may be in flight at a time, from the same executor.
  virtual asio::awaitable<std::pair<asio::error_code, std::size_t>> read_some(
      asio::mutable_buffer buf) = 0;

  /// Writes all of `data` (or fails). Completes when the bytes are handed to the kernel.
  virtual asio::awaitable<asio::error_code> write(asio::const_buffer data) = 0;

  /// Orderly end of the whole connection (TLS close_notify, TCP FIN). Callers bound it in time.
  virtual asio::awaitable<void> shutdown() = 0;

  /// Abortive close; pending operations complete with operation_aborted. Idempotent.
  virtual void close() = 0;

  /// close(), after telling the peer that this is an end and not a loss (TLS close_notify)
  /// when that can go out at once, without waiting: for a session its owner ends.
  virtual void close_orderly() { close(); }

  /// "host:port" of the peer, for logs.
  virtual std::string peer() const = 0;
};

}  // namespace tether::mux
