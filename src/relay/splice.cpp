#include "tether/relay/splice.hpp"

#include <algorithm>
#include <memory>
#include <optional>
#include <random>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/yield.hpp"

namespace tether::relay {
namespace {

using asio::ip::tcp;

void note(splice_result& r, asio::error_code ec) {
  if (!r.error) r.error = ec;
}

// Whether a stream is bulk by move_policy's measure: bytes in either direction within one
// period. Shared by both directions of a splice.
class bulk_watch {
 public:
  explicit bulk_watch(const move_policy* p) : policy_(p) {}

  // Counts `n` bytes moved; true once the stream is bulk.
  bool count(std::size_t n) {
    if (!policy_ || bulk_) return bulk_;
    const auto now = std::chrono::steady_clock::now();
    if (now - since_ > policy_->bulk_period) {
      since_ = now;
      bytes_ = 0;
    }
    bytes_ += n;
    bulk_ = bytes_ >= policy_->bulk_bytes;
    return bulk_;
  }

 private:
  const move_policy* policy_;
  std::chrono::steady_clock::time_point since_{};
  std::uint64_t bytes_ = 0;
  bool bulk_ = false;
};

wire::move_token random_token() {
  std::random_device rd;  // getrandom(): a token only its own credential may claim
  wire::move_token t{};
  for (std::size_t i = 0; i < t.size(); i += 4) {
    const auto v = rd();
    for (std::size_t j = 0; j < 4; ++j) t[i + j] = static_cast<std::byte>(v >> (8 * j));
  }
  return t;
}

// channel → socket, driven by callbacks rather than a coroutine: an idle connection then
// holds one small pending callback, not a spawned coroutine (about a kilobyte each).
// try_receive() lends the bytes; consumed() returns their credit once they are written.
//
// The callbacks own the downlink (shared), since one may still be pending when splice()
// returns; detach() tells them that the socket, channel and result are gone.
class downlink : public std::enable_shared_from_this<downlink> {
 public:
  downlink(tcp::socket& sock, mux::channel& ch, splice_result& r, mux::async_signal& done,
           bulk_watch& bulk)
      : sock_(sock), ch_(ch), r_(r), done_(done), bulk_(bulk) {}

  void start() { pump(); }
  bool finished() const noexcept { return finished_; }
  void detach() noexcept { detached_ = true; }
  // The peer moved its direction to another session; everything before was written.
  const std::optional<wire::move_token>& moved_in() const noexcept { return moved_in_; }
  // The stream became bulk while its bytes came this way.
  bool turned_bulk() const noexcept { return turned_bulk_; }

 private:
  void pump() {
    for (;;) {
      if (unwritten_.empty()) {
        const auto [ec, bytes] = ch_.try_receive();
        if (ec == asio::error::would_block) {
          watch_channel([](downlink& self) { self.pump(); });
          return;
        }
        if (ec) {
          note(r_, ec);
          abort_socket(sock_);
          return finish();
        }
        if (bytes.empty() && (moved_in_ = ch_.moved_away())) return finish();  // not an end
        if (bytes.empty()) {  // the far end half-closed
          asio::error_code ignored;
          sock_.shutdown(tcp::socket::shutdown_send, ignored);
          finish();
          watch_for_reset();
          return;
        }
        unwritten_ = bytes;
        lent_ = bytes.size();
      }
      // Most writes complete at once and need no trip through the event loop.
      asio::error_code ec;
      const auto n = sock_.write_some(asio::buffer(unwritten_.data(), unwritten_.size()), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        wait_writable();
        return;
      }
      if (ec) return fail(ec);
      unwritten_ = unwritten_.subspan(n);
      if (unwritten_.empty()) {
        ch_.consumed(lent_);
        r_.from_channel += lent_;
        // The uplink decides on the move, and asks again after each write while the lane
        // it needs is still coming up. A stream that cannot move does not wake it.
        if (bulk_.count(lent_) && ch_.can_move()) {
          turned_bulk_ = true;
          done_.notify();
        }
      }
    }
  }

  // The local peer is not reading. Its stream may still fail meanwhile (reset, session
  // lost), and then the socket must not wait for a reader that may never come: the channel
  // is watched too, and its failure aborts the socket, which ends the write wait.
  void wait_writable() {
    waiting_writable_ = true;
    sock_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](asio::error_code ec) {
      if (self->detached_) return;
      self->waiting_writable_ = false;
      if (ec) return self->fail(ec);
      self->pump();
    });
    watch_channel([](downlink& self) { self.check_channel(); });
  }

  void check_channel() {
    if (!waiting_writable_) return;  // the write went on meanwhile
    if (const auto ec = ch_.error()) {
      note(r_, ec);
      abort_socket(sock_);  // the pending write wait completes, and fail() finishes
      return;
    }
    watch_channel([](downlink& self) { self.check_channel(); });  // a spurious wake
  }

  // After the far end's FIN the uplink only waits for the local socket, which may stay
  // silent for good; a reset of the stream must still end it (and free the stream), so the
  // channel is watched until it fails or splice() returns: its failure aborts the socket,
  // which ends the uplink's wait.
  void watch_for_reset() {
    const auto generation = ++watch_generation_;
    ch_.when_receivable([self = shared_from_this(), generation] {
      if (self->detached_ || generation != self->watch_generation_) return;
      if (const auto ec = self->ch_.error()) {
        note(self->r_, ec);
        abort_socket(self->sock_);
        return;
      }
      self->watch_for_reset();  // a spurious wake
    });
  }

  // Calls `then(*this)` when the channel has news. One registration is live at a time: a
  // newer one replaces it, and the replaced callback, which still runs, does nothing.
  template <typename Then>
  void watch_channel(Then then) {
    const auto generation = ++watch_generation_;
    ch_.when_receivable([self = shared_from_this(), generation, then] {
      if (self->detached_ || self->finished_ || generation != self->watch_generation_) return;
      then(*self);
    });
  }

  void fail(asio::error_code ec) {
    if (sock_.is_open()) {  // else the uplink failed and closed it: its error is the story
      note(r_, ec);
      ch_.reset(errc::stream_reset);
      abort_socket(sock_);
    }
    finish();
  }

  void finish() {
    finished_ = true;
    done_.notify();
  }

  tcp::socket& sock_;
  mux::channel& ch_;
  splice_result& r_;
  mux::async_signal& done_;
  bulk_watch& bulk_;
  std::optional<wire::move_token> moved_in_;
  bool turned_bulk_ = false;
  std::span<const std::byte> unwritten_;  // of the bytes try_receive() lent
  std::size_t lent_ = 0;
  std::uint64_t watch_generation_ = 0;
  bool waiting_writable_ = false;
  bool finished_ = false;
  bool detached_ = false;
};

}  // namespace

void abort_socket(tcp::socket& sock) {
  asio::error_code ignored;
  if (!sock.is_open()) return;
  sock.set_option(asio::socket_base::linger(true, 0), ignored);
  sock.close(ignored);
}

void prepare_socket(tcp::socket& sock) {
  asio::error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  sock.non_blocking(true, ignored);
}

asio::awaitable<splice_result> splice(tcp::socket& sock, mux::channel& ch, buffer_pool& pool,
                                      const move_policy* policy) {
  splice_result r;
  prepare_socket(sock);
  // One coroutine frame per connection: the uplink (socket → channel) runs here, the
  // downlink (channel → socket) on callbacks. An idle connection holds this frame, a
  // pending readiness callback and a pending channel callback; awaiting async_wait instead
  // would park one more coroutine frame per connection. Neither direction throws; each
  // ends the other by closing the socket or resetting the channel.
  mux::async_signal wake;  // the socket became readable, or the downlink has news
  bulk_watch bulk(policy);
  const auto down = std::make_shared<downlink>(sock, ch, r, wake, bulk);
  down->start();

  // Asked before each read: a move stops the reading. Ours is decided here, once the
  // stream is bulk and a lane can take it; the peer's comes once everything it sent before
  // its MOVE was written.
  bool uplink_bulk = false;
  const auto may_move = [&] {
    return policy && ch.can_move() && !down->finished() && policy->lane_ready &&
           policy->lane_ready();
  };
  bool moving_out = false;
  const auto time_to_stop_reading = [&] {
    if (!moving_out && (uplink_bulk || down->turned_bulk()) && may_move()) moving_out = true;
    return moving_out || down->moved_in().has_value();
  };

  bool readable = true;  // no readiness wait pending
  asio::error_code wait_error;
  // After a read that filled the buffer more is likely waiting: read again at once instead
  // of asking the reactor (a syscall saved per read in bulk transfers). Only after the other
  // streams and the session's reader have had their turn, though: a bulk sender whose reads
  // and sends all complete at once would otherwise keep the thread for its whole window.
  bool more_likely = false;
  for (;;) {
    if (more_likely) {
      co_await mux::yield_turn();
    } else if (!time_to_stop_reading()) {
      // Waits for readiness holding nothing, then borrows a buffer.
      readable = false;
      sock.async_wait(tcp::socket::wait_read, [&readable, &wait_error, &wake](asio::error_code ec) {
        wait_error = ec;
        readable = true;
        wake.notify_here();
      });
      while (!readable && !time_to_stop_reading()) co_await wake.wait();
      if (readable && wait_error) break;  // the downlink failed and closed the socket
    }
    if (time_to_stop_reading()) break;
    more_likely = false;
    auto [cec, credit] = co_await ch.wait_send_credit();
    if (cec) {
      note(r, cec);
      abort_socket(sock);
      break;
    }
    auto lease = pool.take();
    const auto space = lease.space().first(std::min(credit, lease.space().size()));
    asio::error_code rec;
    const auto n = sock.read_some(asio::buffer(space.data(), space.size()), rec);
    if (rec == asio::error::would_block || rec == asio::error::try_again) {
      co_await ch.send({});  // gives the credit back
      continue;
    }
    if (rec == asio::error::eof) {
      co_await ch.send({});
      if (auto ec = co_await ch.send_eof()) {
        note(r, ec);
        abort_socket(sock);
      }
      break;
    }
    if (rec) {
      if (!sock.is_open()) break;  // closed by the downlink meanwhile
      note(r, rec);
      ch.reset(errc::stream_reset);
      abort_socket(sock);
      break;
    }
    if (auto ec = co_await ch.send(space.first(n))) {
      note(r, ec);
      abort_socket(sock);
      break;
    }
    r.to_channel += n;
    more_likely = n == space.size();
    if (policy) uplink_bulk = bulk.count(n);
  }

  // Ours to move: MOVE goes after what we sent, and the peer answers after what it sends.
  const bool moving_in = down->moved_in().has_value();
  if (moving_out && !moving_in && !r.error && sock.is_open()) {
    r.token = random_token();
    if (auto ec = co_await ch.send_move(r.token)) {
      note(r, ec);
      ch.reset(errc::stream_reset);
      abort_socket(sock);
    }
  }
  while (!down->finished()) co_await wake.wait();
  down->detach();
  if (!readable) {  // a readiness wait is still pending on our frame: end it first
    asio::error_code ignored;
    sock.cancel(ignored);
    while (!readable) co_await wake.wait();
  }
  if ((moving_out || moving_in) && !r.error && sock.is_open()) {
    r.moved = true;
    if (moving_in && !moving_out) r.token = *down->moved_in();
    co_return r;  // the socket goes on with the stream
  }
  asio::error_code ignored;
  sock.close(ignored);
  co_return r;
}

}  // namespace tether::relay
