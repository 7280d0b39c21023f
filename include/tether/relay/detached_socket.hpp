#pragma once
// A TCP connection on its way from one event loop to another: a stream that moves to
// another lane (docs/PROTOCOL.md) takes its socket along to the thread of the session it
// moves to. Asio binds a socket to one io_context, so the descriptor is released from the
// old socket and assigned to a new one there.

#include <asio/ip/tcp.hpp>

namespace tether::relay {

class detached_socket {
 public:
  detached_socket() = default;
  /// Takes `sock`'s descriptor; `sock` is closed afterwards (no operation may be pending
  /// on it). Empty if it was not open.
  static detached_socket take(asio::ip::tcp::socket& sock);

  detached_socket(detached_socket&& other) noexcept;
  detached_socket& operator=(detached_socket&& other) noexcept;
  detached_socket(const detached_socket&) = delete;
  detached_socket& operator=(const detached_socket&) = delete;
  /// A connection nobody took is closed abortively: its peer sees a reset, not an end.
  ~detached_socket();

  explicit operator bool() const noexcept { return fd_ >= 0; }

  /// Gives the connection to `sock` (closed, on the event loop that goes on with it).
  asio::error_code attach_to(asio::ip::tcp::socket& sock);

 private:
  int fd_ = -1;
  asio::ip::tcp protocol_ = asio::ip::tcp::v4();
};

}  // namespace tether::relay
