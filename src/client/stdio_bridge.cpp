#include "tether/client/stdio_bridge.hpp"

#include <fcntl.h>

#include <algorithm>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/write.hpp>

#include "tether/mux/use_tuple.hpp"

namespace tether::client {
namespace {

using asio::posix::stream_descriptor;
using side = stdio_bridge_result::side;
using namespace asio::experimental::awaitable_operators;

// A descriptor's file status flags as they were before Asio made it non-blocking. They
// belong to the open file, not to our descriptor: a terminal left non-blocking breaks the
// shell that gets it back.
class saved_flags {
 public:
  explicit saved_flags(stream_descriptor& d)
      : d_(d), flags_(d.is_open() ? ::fcntl(d.native_handle(), F_GETFL) : -1) {}
  saved_flags(const saved_flags&) = delete;
  saved_flags& operator=(const saved_flags&) = delete;
  ~saved_flags() { restore(); }

  void restore() noexcept {
    if (flags_ < 0 || !d_.is_open()) return;
    asio::error_code ignored;
    d_.native_non_blocking(false, ignored);  // Asio's own record of the mode, too
    ::fcntl(d_.native_handle(), F_SETFL, flags_);
    flags_ = -1;
  }

 private:
  stream_descriptor& d_;
  int flags_;
};

struct bridge_state {
  stream_descriptor& in;
  stream_descriptor& out;
  mux::channel& ch;
  saved_flags& out_flags;
  stdio_bridge_result r;

  // The first failure is the story; what it causes on the other side is not.
  void note(side where, asio::error_code ec) {
    if (r.error) return;
    r.error = ec;
    r.failed = where;
  }
  bool failed() const noexcept { return static_cast<bool>(r.error); }

  // An operation on `in` or `out` was cancelled: by the other direction after its failure,
  // or from outside once the channel failed (its session ended while stdin was silent).
  void cancelled(side where, asio::error_code ec) {
    if (failed()) return;
    if (const auto why = ch.error())
      note(side::channel, why);
    else
      note(where, ec);  // nobody says why: not a clean end either
  }
};

// in → channel. Waits for input holding no buffer and no credit, then takes both for one
// read: a slow channel slows the reading of stdin, never the other way round.
asio::awaitable<void> uplink(bridge_state& s, relay::buffer_pool& pool) {
  // Regular files and /dev/null cannot be watched for readiness (epoll refuses them), and
  // need not be: reading them never blocks.
  bool can_wait = true;
  for (;;) {
    if (can_wait) {
      auto [wec] = co_await s.in.async_wait(stream_descriptor::wait_read, use_tuple);
      if (wec == asio::error::operation_not_supported) {
        can_wait = false;
      } else if (wec == asio::error::operation_aborted) {
        s.cancelled(side::input, wec);
        co_return;
      } else if (wec) {
        s.note(side::input, wec);
        s.ch.reset(errc::stream_reset);
        stop_waiting(s.out);
        co_return;
      }
    }
    if (s.failed()) co_return;
    auto [cec, credit] = co_await s.ch.wait_send_credit();
    if (cec) {
      s.note(side::channel, cec);
      stop_waiting(s.out);  // a write to a reader that is not reading must not hold us up
      co_return;
    }
    auto lease = pool.take();
    const auto space = lease.space().first(std::min(credit, lease.space().size()));
    auto [rec, n] =
        co_await s.in.async_read_some(asio::buffer(space.data(), space.size()), use_tuple);
    if (rec == asio::error::eof) {
      co_await s.ch.send({});  // gives the credit back
      if (auto ec = co_await s.ch.send_eof()) {
        s.note(side::channel, ec);
        stop_waiting(s.out);
      }
      co_return;
    }
    if (rec == asio::error::operation_aborted) {
      s.cancelled(side::input, rec);
      co_return;
    }
    if (rec) {
      s.note(side::input, rec);
      s.ch.reset(errc::stream_reset);
      stop_waiting(s.out);
      co_return;
    }
    if (auto ec = co_await s.ch.send(space.first(n))) {
      s.note(side::channel, ec);
      stop_waiting(s.out);
      co_return;
    }
    s.r.to_channel += n;
  }
}

// channel → out. The bytes stay lent by the channel until written, so a reader that does
// not read holds back the device's credit: backpressure all the way.
asio::awaitable<void> downlink(bridge_state& s) {
  for (;;) {
    auto [ec, bytes] = co_await s.ch.receive();
    if (ec) {
      s.note(side::channel, ec);
      stop_waiting(s.in);  // stdin may stay silent for ever: stop waiting on it
      co_return;
    }
    if (bytes.empty()) {  // the device half-closed: our reader sees EOF
      s.out_flags.restore();
      asio::error_code ignored;
      s.out.close(ignored);
      co_return;
    }
    auto [wec, n] =
        co_await asio::async_write(s.out, asio::buffer(bytes.data(), bytes.size()), use_tuple);
    if (wec == asio::error::operation_aborted) {
      s.cancelled(side::output, wec);
      stop_waiting(s.in);
      co_return;
    }
    if (wec) {
      s.note(side::output, wec);
      s.ch.reset(errc::stream_reset);
      stop_waiting(s.in);
      co_return;
    }
    s.ch.consumed(bytes.size());
    s.r.from_channel += n;
  }
}

}  // namespace

void stop_waiting(stream_descriptor& d) noexcept {
  asio::error_code ignored;  // closed already: nothing waits on it
  d.cancel(ignored);
}

asio::awaitable<stdio_bridge_result> bridge_stdio(stream_descriptor& in, stream_descriptor& out,
                                                  mux::channel& ch, relay::buffer_pool& pool) {
  saved_flags in_flags(in);
  saved_flags out_flags(out);
  bridge_state s{in, out, ch, out_flags, {}};
  co_await (uplink(s, pool) && downlink(s));
  in_flags.restore();
  out_flags.restore();
  co_return s.r;
}

}  // namespace tether::client
