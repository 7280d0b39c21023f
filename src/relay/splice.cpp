#include "tether/relay/splice.hpp"

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/this_coro.hpp>
#include <asio/write.hpp>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/use_tuple.hpp"

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

// Writes all of `data`, trying the non-blocking write first: most writes complete at once
// and need no trip through the event loop.
asio::awaitable<asio::error_code> write_all(tcp::socket& sock, std::span<const std::byte> data) {
  while (!data.empty()) {
    asio::error_code ec;
    const auto n = sock.write_some(asio::buffer(data.data(), data.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      auto [wec] = co_await sock.async_wait(tcp::socket::wait_write, use_tuple);
      if (wec) co_return wec;
      continue;
    }
    if (ec) co_return ec;
    data = data.subspan(n);
  }
  co_return asio::error_code{};
}

// socket → channel. Waits for readiness holding nothing, then borrows a buffer.
asio::awaitable<void> uplink(tcp::socket& sock, mux::channel& ch, buffer_pool& pool,
                             splice_result& r) {
  // After a read that filled the buffer more is likely waiting: read again at once instead
  // of asking the reactor (a syscall saved per read in bulk transfers).
  bool more_likely = false;
  for (;;) {
    if (!more_likely) {
      auto [wec] = co_await sock.async_wait(tcp::socket::wait_read, use_tuple);
      if (wec) co_return;  // the other direction failed and closed the socket
    }
    more_likely = false;
    auto [cec, credit] = co_await ch.wait_send_credit();
    if (cec) {
      note(r, cec);
      abort_socket(sock);
      co_return;
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
      co_return;
    }
    if (rec) {
      if (!sock.is_open()) co_return;  // closed by the other direction meanwhile
      note(r, rec);
      ch.reset(errc::stream_reset);
      abort_socket(sock);
      co_return;
    }
    if (auto ec = co_await ch.send(space.first(n))) {
      note(r, ec);
      abort_socket(sock);
      co_return;
    }
    r.to_channel += n;
    more_likely = n == space.size();
  }
}

// channel → socket. receive() lends the bytes; consumed() returns their credit once written.
asio::awaitable<void> downlink(tcp::socket& sock, mux::channel& ch, splice_result& r) {
  for (;;) {
    auto [ec, bytes] = co_await ch.receive();
    if (ec) {
      note(r, ec);
      abort_socket(sock);
      co_return;
    }
    if (bytes.empty()) {  // the far end half-closed
      asio::error_code ignored;
      sock.shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    if (auto wec = co_await write_all(sock, bytes)) {
      if (!sock.is_open()) co_return;
      note(r, wec);
      ch.reset(errc::stream_reset);
      abort_socket(sock);
      co_return;
    }
    ch.consumed(bytes.size());
    r.from_channel += bytes.size();
  }
}

}  // namespace

void prepare_socket(tcp::socket& sock) {
  asio::error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  sock.non_blocking(true, ignored);
}

asio::awaitable<splice_result> splice(tcp::socket& sock, mux::channel& ch, buffer_pool& pool) {
  splice_result r;
  prepare_socket(sock);
  // The downlink runs as its own coroutine and the uplink in this one. (awaitable
  // operator && would do the same with two spawns and a parallel group: more memory per
  // connection, and idle connections are what there are most of.) Neither direction
  // throws; each ends the other by closing the socket or resetting the channel.
  const auto ex = co_await asio::this_coro::executor;
  mux::async_signal downlink_done(ex);
  bool finished = false;
  asio::co_spawn(ex, downlink(sock, ch, r), [&](std::exception_ptr) {
    finished = true;
    downlink_done.notify();
  });
  co_await uplink(sock, ch, pool, r);
  while (!finished) co_await downlink_done.wait();
  asio::error_code ignored;
  sock.close(ignored);
  co_return r;
}

}  // namespace tether::relay
