#include "tether/relay/splice.hpp"

#include <algorithm>

#include "tether/mux/async_signal.hpp"

namespace tether::relay {
namespace {

using asio::ip::tcp;

// Ends the socket so the local peer sees a reset, not an orderly close: the stream failed.
void abort_socket(tcp::socket& sock) {
  asio::error_code ignored;
  if (!sock.is_open()) return;
  sock.set_option(asio::socket_base::linger(true, 0), ignored);
  sock.close(ignored);
}

void note(splice_result& r, asio::error_code ec) {
  if (!r.error) r.error = ec;
}

// channel → socket, driven by callbacks rather than a coroutine: an idle connection then
// holds one small pending callback, not a spawned coroutine (about a kilobyte each).
// try_receive() lends the bytes; consumed() returns their credit once they are written.
class downlink {
 public:
  downlink(tcp::socket& sock, mux::channel& ch, splice_result& r, mux::async_signal& done)
      : sock_(sock), ch_(ch), r_(r), done_(done) {}

  void start() { pump(); }
  bool finished() const noexcept { return finished_; }

 private:
  void pump() {
    for (;;) {
      if (unwritten_.empty()) {
        const auto [ec, bytes] = ch_.try_receive();
        if (ec == asio::error::would_block) {
          ch_.when_receivable([this] { pump(); });
          return;
        }
        if (ec) {
          note(r_, ec);
          abort_socket(sock_);
          return finish();
        }
        if (bytes.empty()) {  // the far end half-closed
          asio::error_code ignored;
          sock_.shutdown(tcp::socket::shutdown_send, ignored);
          return finish();
        }
        unwritten_ = bytes;
        lent_ = bytes.size();
      }
      // Most writes complete at once and need no trip through the event loop.
      asio::error_code ec;
      const auto n = sock_.write_some(asio::buffer(unwritten_.data(), unwritten_.size()), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        sock_.async_wait(tcp::socket::wait_write, [this](asio::error_code wec) {
          if (wec) return fail(wec);
          pump();
        });
        return;
      }
      if (ec) return fail(ec);
      unwritten_ = unwritten_.subspan(n);
      if (unwritten_.empty()) {
        ch_.consumed(lent_);
        r_.from_channel += lent_;
      }
    }
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
  std::span<const std::byte> unwritten_;  // of the bytes try_receive() lent
  std::size_t lent_ = 0;
  bool finished_ = false;
};

}  // namespace

void prepare_socket(tcp::socket& sock) {
  asio::error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  sock.non_blocking(true, ignored);
}

asio::awaitable<splice_result> splice(tcp::socket& sock, mux::channel& ch, buffer_pool& pool) {
  splice_result r;
  prepare_socket(sock);
  // One coroutine frame per connection: the uplink (socket → channel) runs here, the
  // downlink (channel → socket) on callbacks. An idle connection holds this frame, a
  // pending readiness callback and a pending channel callback; awaiting async_wait instead
  // would park one more coroutine frame per connection. Neither direction throws; each
  // ends the other by closing the socket or resetting the channel.
  mux::async_signal wake;  // the socket became readable, or the downlink finished
  downlink down(sock, ch, r, wake);
  down.start();

  bool readable = false;
  asio::error_code wait_error;
  // After a read that filled the buffer more is likely waiting: read again at once instead
  // of asking the reactor (a syscall saved per read in bulk transfers).
  bool more_likely = false;
  for (;;) {
    if (!more_likely) {
      // Waits for readiness holding nothing, then borrows a buffer.
      readable = false;
      sock.async_wait(tcp::socket::wait_read, [&readable, &wait_error, &wake](asio::error_code ec) {
        wait_error = ec;
        readable = true;
        wake.notify_here();
      });
      while (!readable) co_await wake.wait();
      if (wait_error) break;  // the downlink failed and closed the socket
    }
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
  }

  while (!down.finished()) co_await wake.wait();
  asio::error_code ignored;
  sock.close(ignored);
  co_return r;
}

}  // namespace tether::relay
