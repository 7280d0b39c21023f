#pragma once
// One TLS connection driven through in-memory BIOs (internal to the TLS transport).
//
// Why not asio::ssl::stream: it does one socket syscall per 16 KiB record. Here OpenSSL
// encrypts a whole write into `staged_` and the socket sends it in one go; reads pull up to
// 256 KiB of ciphertext per syscall into a per-thread scratch buffer and decrypt straight
// into the caller's buffer.
//
// Full duplex: one read and one write may be in flight at once, on one executor. OpenSSL
// calls never overlap (they run between suspensions on one thread); only socket I/O is
// concurrent. Whatever OpenSSL writes while reading (alerts, replies to post-handshake
// messages) is appended to `staged_` and sent by the single send loop, so a read never
// waits on a write. TLS 1.3 session tickets are consumed by SSL_read like any record.
//
// Idle cost: no ciphertext buffer is held once sent (send buffers go back to a small
// per-thread pool) and unread ciphertext is only kept when the caller's buffer filled first.

#include <openssl/ssl.h>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tether/mux/byte_stream.hpp"

namespace tether::transport::detail {

class tls_connection : public std::enable_shared_from_this<tls_connection> {
 public:
  /// Takes ownership of `ssl`, which must already be in connect or accept state. The socket
  /// must be connected.
  tls_connection(asio::ip::tcp::socket socket, SSL* ssl);
  ~tls_connection();
  tls_connection(const tls_connection&) = delete;
  tls_connection& operator=(const tls_connection&) = delete;

  asio::ip::tcp::socket& socket() noexcept { return socket_; }
  SSL* ssl() const noexcept { return ssl_.get(); }
  const std::string& peer() const noexcept { return peer_; }

  // The operations are static and take the connection by shared_ptr so that a suspended
  // operation keeps it alive even if the owning byte_stream is destroyed meanwhile.

  /// Runs the handshake to completion; fails with a TLS handshake or verification error, a
  /// socket error, or operation_aborted after close(). The caller bounds it in time by
  /// calling close().
  static asio::awaitable<asio::error_code> handshake(std::shared_ptr<tls_connection> self);

  /// byte_stream::read_some: asio::error::eof after the peer's close_notify.
  static asio::awaitable<std::pair<asio::error_code, std::size_t>> read_some(
      std::shared_ptr<tls_connection> self, asio::mutable_buffer buf);

  /// byte_stream::write: completes when all ciphertext of `data` is in the kernel. If the
  /// operation is cancelled it completes with operation_aborted at once, but the bytes were
  /// already encrypted and still go out: the stream stays consistent.
  static asio::awaitable<asio::error_code> write(std::shared_ptr<tls_connection> self,
                                                 asio::const_buffer data);

  /// Sends close_notify and a TCP FIN once everything before it has been sent.
  static asio::awaitable<void> shutdown(std::shared_ptr<tls_connection> self);

  /// Abortive: closes the socket; pending operations complete with operation_aborted.
  void close() noexcept;
  /// close(), with close_notify sent first if the socket takes it now and no write is in
  /// flight (its bytes and ours would interleave).
  void close_orderly() noexcept;

 private:
  friend struct bio_access;

  // BIO callbacks.
  std::size_t bio_read(char* out, std::size_t len) noexcept;
  void bio_write(const char* data, std::size_t len);
  bool bio_eof() const noexcept { return in_eof_ && in_view_.empty(); }

  // OpenSSL asked for more, so the ciphertext it had is consumed.
  void drop_input();
  // Reads the ciphertext available now (at most `want` bytes) into the thread's scratch
  // buffer, without waiting. asio::error::would_block if there is none.
  asio::error_code pull_ciphertext(std::size_t want);
  // Waits for ciphertext on an empty socket and reads the first of it into `first_in_`.
  asio::awaitable<asio::error_code> await_ciphertext();
  // Before any suspension: moves unread ciphertext out of the shared scratch buffer.
  void park_input();
  // Gets more ciphertext: pulls what is there, else waits for it.
  asio::awaitable<asio::error_code> fill_input(std::size_t want);

  // Decrypts into `buf` until it is full or OpenSSL needs more input. Records a fatal
  // error (or eof) in read_error_.
  std::size_t decrypt(asio::mutable_buffer buf);

  void start_send();
  void on_sent(const asio::error_code& ec, std::size_t n);
  // Completes when everything staged so far is sent.
  asio::awaitable<asio::error_code> flush();
  // Best effort, never waits: pushes a final alert out before the socket is closed.
  void send_now_nonblocking() noexcept;

  struct ssl_deleter {
    void operator()(SSL* s) const noexcept { SSL_free(s); }
  };

  asio::ip::tcp::socket socket_;
  std::unique_ptr<SSL, ssl_deleter> ssl_;
  std::string peer_;
  bool closed_ = false;
  bool shutdown_sent_ = false;
  bool in_handshake_ = true;

  // Input: `in_view_` is the unread ciphertext, in the thread's scratch buffer, in
  // `first_in_` or in `in_leftover_`.
  std::span<const std::byte> in_view_;
  bool in_view_is_scratch_ = false;
  bool drained_ = false;  // the last read took less than it asked for: the socket was empty
  // Where the reactor reads when the socket was empty. A read pending in Asio's reactor
  // costs no system call to set up (a readiness wait re-arms epoll every time), but its
  // buffer must be this connection's own: big enough for small records, which is what
  // interactive traffic sends; bulk traffic goes on with pulls into the scratch buffer.
  std::array<std::byte, 2048> first_in_;
  bool in_eof_ = false;
  std::vector<std::byte> in_leftover_;
  asio::error_code read_error_;  // sticky once the read side has ended

  // Output: OpenSSL appends to `staged_`; one async_write at a time sends `sending_`.
  std::vector<std::byte> staged_;
  std::vector<std::byte> sending_;
  bool send_active_ = false;
  std::uint64_t produced_ = 0;  // ciphertext bytes OpenSSL has produced
  std::uint64_t sent_ = 0;      // of which the kernel has taken
  asio::error_code send_error_;
  asio::error_code write_error_;   // sticky once the write side has failed
  asio::steady_timer out_signal_;  // cancelled whenever a send completes (a condition variable)
};

/// The byte_stream users see; closes the connection when destroyed.
std::unique_ptr<mux::byte_stream> make_tls_byte_stream(std::shared_ptr<tls_connection> c);

}  // namespace tether::transport::detail
