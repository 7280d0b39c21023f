#pragma once
// What a session knows of one stream. Shared by the session's table and the stream's
// channel object; only ever touched from the session's executor.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/receive_window.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/wire/frame.hpp"

namespace tether::mux {

/// Whole datagrams waiting to be written, oldest first. Every stream has one, TCP streams
/// included, so it must cost nothing while unused: libstdc++'s std::deque allocates about
/// 600 bytes as it is constructed, which was a sixth of what an idle stream costs.
class datagram_queue {
 public:
  bool empty() const noexcept { return head_ == items_.size(); }
  std::vector<std::byte>& front() noexcept { return items_[head_]; }
  void pop_front() {
    items_[head_++] = {};
    if (head_ == items_.size()) {
      clear();
    } else if (head_ >= 64 && head_ * 2 >= items_.size()) {  // keeps the vector bounded
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void push_back(std::vector<std::byte> d) { items_.push_back(std::move(d)); }
  void clear() noexcept {
    items_.clear();
    head_ = 0;
  }

 private:
  std::vector<std::vector<std::byte>> items_;
  std::size_t head_ = 0;
};

struct stream_state {
  enum class phase : std::uint8_t { opening, open, done };

  stream_state(std::uint32_t stream_id, receive_window window)
      : id(stream_id), recv(window) {}

  std::uint32_t id;
  phase state = phase::opening;
  bool datagrams = false;    // a UDP flow: whole datagrams in DATAGRAM frames, no FIN
  asio::error_code failure;  // set once: reset by the peer, refused, or session lost
  std::string refusal;       // the peer's words when it refused to open the stream

  // Sending: the peer's credit for this stream, and credit taken by wait_send_credit()
  // but not yet used by send().
  std::int64_t send_credit = 0;
  std::size_t reserved = 0;
  bool charged = false;                // holds one send buffer of the session's output budget
  std::span<const std::byte> pending;  // caller's bytes not yet copied into a frame
  bool fin_pending = false;            // send an (empty) DATA frame with FIN
  bool fin_sent = false;
  // Lanes: the stream may move to another session (the server said so as it accepted it);
  // our FIN is to be a MOVE with move_out; the peer's FIN was a MOVE with moved_in.
  bool movable = false;
  bool move_pending = false;  // with fin_pending
  wire::move_token move_out{};
  std::optional<wire::move_token> moved_in;
  bool scheduled = false;              // in the session's ready list
  async_signal send_wake;              // credit arrived, pending copied, open result, failure
  // Datagram streams: whole datagrams waiting for their round-robin turn, and the bytes
  // they hold (frame headers included) in the session's output budget.
  datagram_queue datagrams_out;
  std::size_t datagram_bytes = 0;
  std::size_t datagram_payload = 0;  // of which payload: the session credit they took

  // Receiving: bytes from DATA frames waiting for the local side, in chunks so a chunk
  // handed out by receive() never moves while more arrive. On a datagram stream each
  // element is one whole datagram.
  std::vector<std::vector<std::byte>> inbound;
  std::size_t inbound_bytes = 0;
  // Since when the oldest of them waits: set as they start to wait and whenever the local
  // side takes some (see session::reset_streams_holding_the_window_after).
  std::chrono::steady_clock::time_point unread_since{};
  bool front_handed_out = false;
  bool fin_received = false;
  receive_window recv;  // what the peer may send on this stream, and how that grows
  async_signal receive_wake;

  bool finished() const noexcept { return fin_sent && fin_received && inbound.empty(); }

  void fail(asio::error_code why) {
    if (!failure) failure = why;
    send_wake.notify();
    receive_wake.notify();
  }
};

}  // namespace tether::mux
