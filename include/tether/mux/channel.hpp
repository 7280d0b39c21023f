#pragma once
// One tunnelled, bidirectional stream: a stream of a tether session, or an SSH
// direct-tcpip channel. The relay copies a local socket to and from a channel and never
// sees which kind it is.
//
// A stream opened with protocol udp is a datagram stream (a UDP flow): it carries whole
// datagrams with try_send_datagram(), and each receive() or try_receive() returns exactly
// one datagram (an empty span is an empty datagram; a flow has no end-of-stream and ends
// with an error: reset, idle, session lost). The byte-stream calls (wait_send_credit,
// send, send_eof) fail on it with errc::unsupported.

#include <asio/awaitable.hpp>
#include <asio/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>

#include "tether/errc.hpp"
#include "tether/wire/frame.hpp"

namespace tether::mux {

/// What became of a datagram offered to a datagram stream. UDP is lossy and must stay so:
/// a datagram that cannot go now is dropped, never queued without bound or waited for.
enum class datagram_status : std::uint8_t {
  sent,        // queued whole toward the peer
  no_credit,   // the stream's or the session's window is used up
  backlogged,  // too much already waits to be written toward the peer
  too_large,   // above wire::max_datagram
  failed,      // the stream failed (error() says why) or is not a datagram stream
};

class channel {
 public:
  virtual ~channel() = default;

  /// Waits until the channel can take at least one byte now and returns how many it can take
  /// (its flow-control credit, capped at one frame). Errors: the stream was reset or its
  /// session ended (the code says why).
  virtual asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() = 0;

  /// Queues `data` (at most what wait_send_credit returned) and completes once the channel
  /// no longer needs the caller's buffer. One send at a time.
  virtual asio::awaitable<asio::error_code> send(std::span<const std::byte> data) = 0;

  /// Half-close: the peer reads end-of-stream after the bytes already sent.
  virtual asio::awaitable<asio::error_code> send_eof() = 0;

  /// Next bytes from the peer. An empty span with no error is end-of-stream (the peer
  /// half-closed). The span stays valid until the next receive() or consumed().
  /// One receive at a time.
  virtual asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() = 0;

  /// receive() without waiting: asio::error::would_block where receive() would wait. Then
  /// when_receivable() calls `wake` once, from the executor and never inline, when trying
  /// again may succeed or the channel failed (wake-ups may be spurious). This lets a relay
  /// keep one small pending callback per idle connection instead of a parked coroutine.
  /// `wake` may also run when the channel is destroyed: it must keep alive what it uses.
  virtual std::pair<asio::error_code, std::span<const std::byte>> try_receive() = 0;
  virtual void when_receivable(std::function<void()> wake) = 0;

  /// The bytes of the last receive() or try_receive() were delivered to the local side;
  /// returns their credit to the peer.
  virtual void consumed(std::size_t n) = 0;

  /// Datagram streams: queues `datagram` whole as one unit, or drops it at once and says
  /// why. Never waits.
  virtual datagram_status try_send_datagram(std::span<const std::byte> datagram) = 0;

  /// Lanes (docs/PROTOCOL.md): whether this stream may move to another session of the same
  /// client. Only a tether stream can, and only when both peers offered lanes and the server
  /// said so as it accepted the stream.
  virtual bool can_move() const noexcept { return false; }

  /// Ends our direction of the stream on this session as send_eof() does, after the bytes
  /// already sent, telling the peer that it continues on the session that claims `token`.
  virtual asio::awaitable<asio::error_code> send_move(const wire::move_token& token) {
    (void)token;
    co_return make_error_code(errc::unsupported);
  }

  /// Once receive() returned end-of-stream: the peer's token when its direction moved to
  /// another session rather than ended.
  virtual std::optional<wire::move_token> moved_away() const { return std::nullopt; }

  /// Abortive end with a reason the peer will see. Pending operations complete with an error.
  virtual void reset(errc reason) = 0;

  /// Why the channel failed (reset by the peer, its session lost), or no error. Does not
  /// touch bytes lent by the last receive: a relay that is still writing them asks this
  /// when woken by when_receivable() to learn that the stream is gone.
  virtual asio::error_code error() const noexcept = 0;
};

}  // namespace tether::mux
