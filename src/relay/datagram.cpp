#include "tether/relay/datagram.hpp"

#include <spdlog/spdlog.h>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/relay/udp_batch.hpp"

namespace tether::relay {
namespace {

using asio::ip::udp;
using clock = std::chrono::steady_clock;

// Datagrams moved per turn of the event loop in one direction of one flow; then the flow
// lets the others run. They go in batches of udp_batch_size per system call, and each
// still costs the kernel's UDP path, so 64 keep a turn well under a millisecond.
constexpr std::size_t datagrams_per_turn = 64;
// Socket buffers asked for: a burst of full-size datagrams fits while the event loop is
// busy elsewhere. The kernel caps them at net.core.[rw]mem_max.
constexpr int socket_buffer_size = 1 << 20;

bool would_block(const asio::error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

// The kernel's report, on a connected UDP socket, of an ICMP port unreachable.
bool port_unreachable(const asio::error_code& ec) {
  return ec == asio::error::connection_refused;
}

}  // namespace

// ---- counters ----------------------------------------------------------------------------

const char* describe(drop_reason r) noexcept {
  switch (r) {
    case drop_reason::no_credit:
      return "no credit";
    case drop_reason::backlogged:
      return "session output backlogged";
    case drop_reason::opening:
      return "flow still opening";
    case drop_reason::socket_full:
      return "socket buffer full";
    case drop_reason::too_large:
      return "datagram too large";
  }
  return "unknown";
}

std::uint64_t datagram_counters::dropped_total() const noexcept {
  std::uint64_t total = 0;
  for (const auto n : dropped) total += n;
  return total;
}

void datagram_counters::count_send(mux::datagram_status s, std::size_t bytes) noexcept {
  switch (s) {
    case mux::datagram_status::sent:
      ++to_channel;
      bytes_to_channel += bytes;
      return;
    case mux::datagram_status::no_credit:
      return drop(drop_reason::no_credit);
    case mux::datagram_status::backlogged:
      return drop(drop_reason::backlogged);
    case mux::datagram_status::too_large:
      return drop(drop_reason::too_large);
    case mux::datagram_status::failed:
      return;  // the flow is ending: not a drop to report
  }
}

datagram_counters& datagram_counters::operator+=(const datagram_counters& o) noexcept {
  to_channel += o.to_channel;
  from_channel += o.from_channel;
  bytes_to_channel += o.bytes_to_channel;
  bytes_from_channel += o.bytes_from_channel;
  for (std::size_t i = 0; i < drop_reason_count; ++i) dropped[i] += o.dropped[i];
  return *this;
}

std::string datagram_counters::drop_summary() const {
  const auto total = dropped_total();
  if (total == 0) return {};
  std::string out = std::to_string(total) + " dropped:";
  const char* separator = " ";
  for (std::size_t i = 0; i < drop_reason_count; ++i) {
    if (dropped[i] == 0) continue;
    out += separator;
    out += std::to_string(dropped[i]);
    out += ' ';
    out += describe(static_cast<drop_reason>(i));
    separator = ", ";
  }
  return out;
}

// ---- channel → socket --------------------------------------------------------------------

datagram_downlink::datagram_downlink(udp::socket& sock, std::optional<udp::endpoint> to,
                                     mux::channel& ch, datagram_counters& counters,
                                     end_handler on_end, std::function<void()> on_activity)
    : sock_(sock),
      to_(std::move(to)),
      ch_(ch),
      counters_(counters),
      on_end_(std::move(on_end)),
      on_activity_(std::move(on_activity)),
      gso_limit_(udp_send_batch::initial_gso_limit(sock)) {}

std::shared_ptr<datagram_downlink> datagram_downlink::start(
    udp::socket& sock, std::optional<udp::endpoint> to, mux::channel& ch,
    datagram_counters& counters, end_handler on_end, std::function<void()> on_activity) {
  // A blocking socket would make a full buffer wait in send() instead of dropping.
  asio::error_code ignored;
  sock.non_blocking(true, ignored);
  auto self = std::make_shared<datagram_downlink>(sock, std::move(to), ch, counters,
                                                  std::move(on_end), std::move(on_activity));
  // The first look at the channel is posted, so on_end never runs inside start(): a caller
  // may keep the returned pointer in the very table its handler erases from.
  asio::post(sock.get_executor(), [self] { self->pump(); });
  return self;
}

void datagram_downlink::detach() noexcept {
  detached_ = true;
}

void datagram_downlink::pump() {
  if (detached_ || ended_) return;
  // Datagrams are copied out of the channel into a batch (their credit goes back at once)
  // and sent together: one sendmmsg per batch instead of a send() each.
  auto& batch = udp_send_batch::for_this_thread();
  const auto* to = to_ ? &*to_ : nullptr;
  std::size_t left = datagrams_per_turn;
  for (;;) {
    batch.clear();
    asio::error_code channel_error;  // the channel failed (after the datagrams before it)
    bool drained = false;            // nothing more waits on the channel
    while (batch.size() < left) {
      const auto [ec, datagram] = ch_.try_receive();
      if (ec == asio::error::would_block) {
        drained = true;
        break;
      }
      if (ec) {
        channel_error = ec;
        break;
      }
      if (!batch.fits(datagram.size())) break;  // it stays first in line for the next batch
      batch.add(datagram, to);
      ch_.consumed(datagram.size());  // delivered or dropped, its credit goes back
    }
    left -= batch.size();
    if (!batch.empty() && !send_batch(batch)) return;  // ended, or on_activity detached us
    if (channel_error) return end(channel_error);
    if (drained) {
      // A newer registration replaces an older one, which still runs: the generation tells
      // a stale wake-up (or the channel's destruction) from a live one.
      const auto generation = ++watch_generation_;
      ch_.when_receivable([self = shared_from_this(), generation] {
        if (generation == self->watch_generation_) self->pump();
      });
      return;
    }
    if (left == 0) break;
  }
  // More may be waiting: continue on a later turn, after the other flows had theirs.
  asio::post(sock_.get_executor(), [self = shared_from_this()] { self->pump(); });
}

bool datagram_downlink::send_batch(udp_send_batch& batch) {
  std::size_t next = 0;
  while (next < batch.size()) {
    const auto r = batch.send(sock_, next, gso_limit_);
    for (std::size_t i = next; i < next + r.sent; ++i) {
      ++counters_.from_channel;
      counters_.bytes_from_channel += batch.datagram_size(i);
      if (on_activity_) on_activity_();
      if (detached_) return false;  // on_activity may have ended the flow
    }
    next += r.sent;
    if (!r.error) break;
    if (port_unreachable(r.error)) {
      end(make_error_code(errc::refused));
      return false;
    }
    if (would_block(r.error)) {
      // The socket buffer is full: what is left of the batch would find it full too.
      for (; next < batch.size(); ++next) counters_.drop(drop_reason::socket_full);
      break;
    }
    // Refused for this datagram alone (too big for the route, a firewall): the rest go on.
    spdlog::debug("udp flow: send of {} bytes failed: {}", batch.datagram_size(next),
                  r.error.message());
    counters_.drop(drop_reason::socket_full);
    ++next;
  }
  return true;
}

void datagram_downlink::end(asio::error_code why) {
  if (ended_ || detached_) return;
  ended_ = true;
  ++watch_generation_;  // a pending wake-up does nothing now
  if (on_end_) {
    auto handler = std::move(on_end_);
    handler(why);
  }
}

// ---- one server-side flow ----------------------------------------------------------------

namespace {

// What the callbacks of one flow tell its coroutine. Shared with them, since a cancelled
// wait or timer completes after the coroutine has returned.
struct flow_events {
  mux::async_signal wake;
  bool readable = false;
  asio::error_code read_wait_error;
  bool timer_due = false;
  bool downlink_ended = false;
  asio::error_code downlink_error;
  clock::time_point last_activity = clock::now();
};

void prepare_socket(udp::socket& sock) {
  asio::error_code ignored;
  sock.non_blocking(true, ignored);
  sock.set_option(asio::socket_base::send_buffer_size(socket_buffer_size), ignored);
  sock.set_option(asio::socket_base::receive_buffer_size(socket_buffer_size), ignored);
}

// The code a flow's RESET carries for why it ended.
errc reset_reason(const asio::error_code& why) {
  if (why.category() == tether_category()) return static_cast<errc>(why.value());
  return errc::stream_reset;
}

}  // namespace

asio::awaitable<datagram_result> relay_datagrams(udp::socket& sock, mux::channel& ch,
                                                 std::chrono::milliseconds idle,
                                                 buffer_pool& /*unused*/) {
  datagram_result r;
  prepare_socket(sock);
  const auto ev = std::make_shared<flow_events>();
  const auto down = datagram_downlink::start(
      sock, std::nullopt, ch, r.counters,
      [ev](asio::error_code ec) {
        ev->downlink_ended = true;
        ev->downlink_error = ec;
        ev->wake.notify();
      },
      [ev] { ev->last_activity = clock::now(); });

  // Idle: one timer, armed for the end of the idle time as last seen. When it fires early
  // (datagrams passed meanwhile) it is armed again for the new end, so a busy flow touches
  // its timer once per idle period, not once per datagram.
  asio::steady_timer timer(sock.get_executor());
  const bool expires = idle.count() > 0;
  const auto arm_timer = [&] {
    timer.expires_at(ev->last_activity + idle);
    timer.async_wait([ev](asio::error_code ec) {
      if (ec) return;  // cancelled: the flow is over
      ev->timer_due = true;
      ev->wake.notify();
    });
  };
  if (expires) arm_timer();

  bool waiting_read = false;
  bool more_likely = false;  // the last turn ended at its limit, not with the socket empty
  try {
    for (;;) {
      if (!more_likely && !waiting_read) {
        // Waits for readiness holding no buffer.
        waiting_read = true;
        ev->readable = false;
        sock.async_wait(udp::socket::wait_read, [ev](asio::error_code ec) {
          ev->read_wait_error = ec;
          ev->readable = true;
          // Resumes the flow right here: a post would cost one more turn of the event loop.
          ev->wake.notify_here();
        });
      }
      while (!more_likely && !ev->readable && !ev->timer_due && !ev->downlink_ended)
        co_await ev->wake.wait();

      if (ev->downlink_ended) {
        r.error = ev->downlink_error;
        break;
      }
      if (ev->timer_due) {
        ev->timer_due = false;
        if (clock::now() >= ev->last_activity + idle) {
          r.error = make_error_code(errc::timed_out);
          break;
        }
        arm_timer();
        continue;
      }
      if (!more_likely) {
        waiting_read = false;
        if (ev->read_wait_error) {
          r.error = ev->read_wait_error;
          break;
        }
      }

      // What waits is read in batches (recvmmsg) into per-thread memory and offered to the
      // channel before the next suspension, so an idle flow holds no buffer.
      auto& batch = udp_receive_batch::for_this_thread();
      bool passed = false;
      std::size_t taken = 0;
      while (taken < datagrams_per_turn && !r.error) {
        asio::error_code rec;
        const auto n = batch.receive(sock, rec);
        if (would_block(rec)) break;
        if (port_unreachable(rec)) {
          r.error = make_error_code(errc::refused);
          break;
        }
        if (rec) {  // e.g. an ICMP host unreachable, reported once: UDP goes on
          spdlog::debug("udp flow: receive failed: {}", rec.message());
          break;
        }
        for (std::size_t i = 0; i < n; ++i) {
          const auto d = batch.data(i);
          // A datagram cut short was above what the tunnel carries anyway.
          const auto status =
              batch.truncated(i) ? mux::datagram_status::too_large : ch.try_send_datagram(d);
          r.counters.count_send(status, d.size());
          if (status == mux::datagram_status::failed) {
            r.error = ch.error() ? ch.error() : make_error_code(errc::stream_reset);
            break;
          }
          passed = passed || status == mux::datagram_status::sent;
        }
        taken += n;
        // A short batch emptied the socket: wait for readiness rather than ask again.
        if (n < udp_batch_size) break;
      }
      more_likely = !r.error && taken >= datagrams_per_turn;
      if (passed) ev->last_activity = clock::now();
      if (r.error) break;
      if (more_likely) {
        // A busy device: let the other flows and streams have a turn, then read on.
        co_await asio::post(co_await asio::this_coro::executor, use_tuple);
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("udp flow ended by exception: {}", e.what());
    r.error = make_error_code(errc::internal);
  }

  // The channel is reset with the flow's reason, unless it failed first (then its failure
  // is the reason and the peer already knows).
  if (!ch.error()) ch.reset(reset_reason(r.error));
  down->detach();
  timer.cancel();
  asio::error_code ignored;
  sock.close(ignored);
  co_return r;
}

}  // namespace tether::relay
