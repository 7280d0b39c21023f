#include "tether/client/udp_forwarder.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <deque>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

#include "tether/mux/use_tuple.hpp"
#include "tether/relay/udp_batch.hpp"
#include "tether/wire/frame.hpp"

namespace tether::client {
namespace {

using asio::ip::udp;
using flow_clock = std::chrono::steady_clock;

std::string endpoint_text(const udp::endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

// Datagrams read per readiness: enough to drain a burst in one turn of the loop, few enough
// that one busy mapping does not keep the others (and the session) waiting.
constexpr std::size_t max_batch = 64;
// Asked of the kernel (it caps this at net.core.rmem_max): a burst of large datagrams from
// several sources must not overflow the one socket they all arrive on.
constexpr int wanted_receive_buffer = 4 * 1024 * 1024;

}  // namespace

// Lifetime: the forwarder object owns this; the read loop, the timers and each open in
// progress keep it alive through shared_ptr, and a flow's downlink reaches it only through
// a weak_ptr. stop() ends everything that refers back to the socket or the counters.
struct udp_forwarder::state : std::enable_shared_from_this<state> {
  struct flow {
    udp::endpoint source;
    std::uint64_t id;  // tells a flow from a later one of the same source
    flow_clock::time_point last_active;
    std::unique_ptr<mux::channel> ch;  // null while the stream is being opened
    std::shared_ptr<relay::datagram_downlink> downlink;
    std::deque<std::vector<std::byte>> waiting;  // while opening
    std::size_t waiting_bytes = 0;
  };
  using flow_list = std::list<flow>;  // least recently used first
  using flow_ref = flow_list::iterator;

  state(udp::socket s, mapping m, std::string l, event_sink& e, flow_opener o,
        udp_forwarder_options opts)
      : sock(std::move(s)),
        map(std::move(m)),
        local(std::move(l)),
        events(e),
        open(std::move(o)),
        options(opts),
        idle_timer(sock.get_executor()),
        report_timer(sock.get_executor()) {}

  udp::socket sock;
  mapping map;
  std::string local;
  event_sink& events;
  flow_opener open;
  udp_forwarder_options options;

  flow_list flows;
  std::unordered_map<udp::endpoint, flow_ref> by_source;
  std::uint64_t next_id = 1;
  bool started = false;
  relay::datagram_counters counters;
  std::array<std::uint64_t, relay::drop_reason_count> reported{};  // drops already logged

  // One sweep timer for all flows, due when the least recently used one would expire.
  asio::steady_timer idle_timer;
  bool idle_timer_armed = false;
  // Runs while there are flows (every drop happens on one), and once more after the last.
  asio::steady_timer report_timer;
  bool report_timer_armed = false;
  bool stopped = false;

  std::string label() const {
    return "udp " + local + " -> " + map.device + ":" + std::to_string(map.device_port);
  }

  // ---- reading the local socket ----

  static asio::awaitable<void> receive_loop(std::shared_ptr<state> self) {
    auto& s = *self;
    while (!s.stopped) {
      auto [ec] = co_await s.sock.async_wait(udp::socket::wait_read, use_tuple);
      if (s.stopped || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        spdlog::warn("{}: waiting for datagrams failed: {}", s.label(), ec.message());
        asio::steady_timer pause(s.sock.get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      s.read_batch();
    }
  }

  // Reads in batches (recvmmsg) into per-thread memory; each datagram is queued toward the
  // tunnel (copied) or dropped before the next batch overwrites it.
  void read_batch() {
    const auto now = flow_clock::now();
    auto& batch = relay::udp_receive_batch::for_this_thread();
    for (std::size_t taken = 0; taken < max_batch && !stopped;) {
      asio::error_code ec;
      const auto n = batch.receive(sock, ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) return;
      if (ec) {  // a pending socket error, reported once; the next read goes on
        spdlog::debug("{}: read failed: {}", label(), ec.message());
        ++taken;
        continue;
      }
      for (std::size_t i = 0; i < n && !stopped; ++i) {
        if (batch.truncated(i)) {  // above the largest UDP payload: only IPv6 jumbograms
          counters.drop(relay::drop_reason::too_large);
          continue;
        }
        on_datagram(batch.source(i), batch.data(i), now);
      }
      taken += n;
      // A short batch emptied the socket: wait for readiness rather than ask again.
      if (n < relay::udp_batch_size) return;
    }
  }

  void on_datagram(const udp::endpoint& from, std::span<const std::byte> d,
                   flow_clock::time_point now) {
    if (d.size() > wire::max_datagram) {  // only IPv6 can carry these; never worth a flow
      counters.drop(relay::drop_reason::too_large);
      return;
    }
    std::optional<flow_ref> found;
    if (auto it = by_source.find(from); it != by_source.end()) found = it->second;
    if (found && (*found)->ch && (*found)->ch->error()) {
      // Its stream failed and the downlink has not said so yet: end it now (reporting a
      // refusal), and this datagram opens the next flow.
      end_flow(*found, (*found)->ch->error());
      found.reset();
    }
    flow_ref f;
    if (found) {
      f = *found;
      touch(f, now);
    } else {
      f = new_flow(from, now);
    }
    if (!f->ch) return hold(*f, d);
    counters.count_send(f->ch->try_send_datagram(d), d.size());
  }

  // A flow whose stream is still being opened keeps a few datagrams: the one that made it
  // open is usually the one that matters (a DNS query).
  void hold(flow& f, std::span<const std::byte> d) {
    if (f.waiting.size() >= max_datagrams_while_opening ||
        f.waiting_bytes + d.size() > max_bytes_while_opening) {
      counters.drop(relay::drop_reason::opening);
      return;
    }
    f.waiting.emplace_back(d.begin(), d.end());
    f.waiting_bytes += d.size();
  }

  // ---- the flow table ----

  std::optional<flow_ref> find(const udp::endpoint& source, std::uint64_t id) {
    auto it = by_source.find(source);
    if (it == by_source.end() || it->second->id != id) return std::nullopt;
    return it->second;
  }

  void touch(flow_ref f, flow_clock::time_point now) {
    f->last_active = now;
    flows.splice(flows.end(), flows, f);  // O(1); iterators stay valid
  }

  flow_ref new_flow(const udp::endpoint& from, flow_clock::time_point now) {
    if (flows.size() >= options.max_flows) {
      auto oldest = flows.begin();
      spdlog::debug("{}: {} flows, closing the least recently used (from {})", label(),
                    flows.size(), endpoint_text(oldest->source));
      forget(oldest);  // its stream is reset ("flow closed")
    }
    flows.push_back(flow{from, next_id++, now, nullptr, nullptr, {}, 0});
    const auto f = std::prev(flows.end());
    by_source.emplace(from, f);
    spdlog::debug("{}: new flow from {}", label(), endpoint_text(from));
    arm_idle_timer();
    arm_report_timer();
    asio::co_spawn(sock.get_executor(), open_flow(shared_from_this(), from, f->id),
                   [](std::exception_ptr e) {
                     if (e) spdlog::error("opening a udp flow failed unexpectedly");
                   });
    return f;
  }

  static asio::awaitable<void> open_flow(std::shared_ptr<state> self, udp::endpoint source,
                                         std::uint64_t id) {
    auto ch = co_await self->open();
    self->opened(source, id, std::move(ch));
  }

  void opened(const udp::endpoint& source, std::uint64_t id, std::unique_ptr<mux::channel> ch) {
    const auto found = find(source, id);
    if (!found) return;  // evicted, idle or stopped meanwhile: `ch` resets as it goes
    const auto f = *found;
    if (!ch) {  // the opener has reported why; the next datagram tries again
      forget(f);
      return;
    }
    f->ch = std::move(ch);
    std::weak_ptr<state> weak = shared_from_this();
    f->downlink = relay::datagram_downlink::start(
        sock, source, *f->ch, counters,
        [weak, source, id](asio::error_code why) {
          // Posted: the downlink may end from inside start() or our own calls into it.
          if (auto s = weak.lock())
            asio::post(s->sock.get_executor(), [weak, source, id, why] {
              if (auto s2 = weak.lock()) s2->downlink_ended(source, id, why);
            });
        },
        [weak, source, id] {
          if (auto s = weak.lock())
            if (auto g = s->find(source, id)) s->touch(*g, flow_clock::now());
        });
    for (const auto& d : f->waiting) counters.count_send(f->ch->try_send_datagram(d), d.size());
    f->waiting.clear();
    f->waiting_bytes = 0;
  }

  void downlink_ended(const udp::endpoint& source, std::uint64_t id, asio::error_code why) {
    if (auto f = find(source, id)) end_flow(*f, why);
  }

  // A flow whose stream failed. Only a refusal (ICMP port unreachable at the device) is
  // news for the user; session loss is reported by the session, and a reset or idle end
  // by the server needs no words: the next datagram opens a new flow.
  void end_flow(flow_ref f, asio::error_code why) {
    if (why == make_error_code(errc::refused)) {
      const auto msg = "device " + map.device + " port " + std::to_string(map.device_port) +
                       " refused the datagram (nothing listening)";
      spdlog::warn("{}: flow from {}: {}", label(), endpoint_text(f->source), msg);
      events.stream_error(map, local, errc::refused, msg);
    } else {
      spdlog::debug("{}: flow from {} ended: {}", label(), endpoint_text(f->source), why.message());
    }
    forget(f);
  }

  // Removes a flow. A stream still open is reset ("flow closed") as its channel goes.
  void forget(flow_ref f) {
    if (f->downlink) f->downlink->detach();
    by_source.erase(f->source);
    flows.erase(f);
  }

  // ---- timers ----

  void arm_idle_timer() {
    if (idle_timer_armed || flows.empty() || stopped) return;
    idle_timer_armed = true;
    idle_timer.expires_at(flows.front().last_active + options.idle);
    idle_timer.async_wait([self = shared_from_this()](asio::error_code ec) {
      self->idle_timer_armed = false;
      if (ec || self->stopped) return;
      self->expire_idle();
      self->arm_idle_timer();
    });
  }

  // Flows are in order of last use: the idle ones are all at the front.
  void expire_idle() {
    const auto now = flow_clock::now();
    while (!flows.empty() && flows.front().last_active + options.idle <= now) {
      auto f = flows.begin();
      spdlog::debug("{}: flow from {} idle for {} ms, closing it", label(),
                    endpoint_text(f->source), options.idle.count());
      if (f->ch) f->ch->reset(errc::timed_out);
      forget(f);
    }
  }

  void arm_report_timer() {
    if (report_timer_armed || stopped) return;
    report_timer_armed = true;
    report_timer.expires_after(options.drop_report_interval);
    report_timer.async_wait([self = shared_from_this()](asio::error_code ec) {
      self->report_timer_armed = false;
      if (ec || self->stopped) return;
      self->report_drops();
      if (!self->flows.empty()) self->arm_report_timer();
    });
  }

  // "udp 127.0.0.1:5353 -> dev-42:53: 37 dropped in the last 10 s: 30 no credit, 7 flow
  // still opening"
  void report_drops() {
    std::uint64_t total = 0;
    std::string parts;
    for (std::size_t i = 0; i < relay::drop_reason_count; ++i) {
      const auto n = counters.dropped[i] - reported[i];
      if (n == 0) continue;
      total += n;
      if (!parts.empty()) parts += ", ";
      parts += std::to_string(n) + " " + describe(static_cast<relay::drop_reason>(i));
    }
    reported = counters.dropped;
    if (total == 0) return;
    const double seconds = static_cast<double>(options.drop_report_interval.count()) / 1000;
    spdlog::warn("{}: {} dropped in the last {:g} s: {}", label(), total, seconds, parts);
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    while (!flows.empty()) forget(flows.begin());  // detaches every downlink from the socket
    asio::error_code ignored;
    sock.close(ignored);
    idle_timer.cancel();
    report_timer.cancel();
    spdlog::debug("{}: closed; {} datagrams out, {} in, {} dropped", label(), counters.to_channel,
                  counters.from_channel, counters.dropped_total());
  }
};

udp_forwarder::udp_forwarder(udp::socket sock, mapping m, std::string local, event_sink& events,
                             flow_opener open, udp_forwarder_options options)
    : state_(std::make_shared<state>(std::move(sock), std::move(m), std::move(local), events,
                                     std::move(open), options)) {
  if (state_->options.max_flows == 0) state_->options.max_flows = 1;
  asio::error_code ignored;
  state_->sock.non_blocking(true, ignored);
  state_->sock.set_option(udp::socket::receive_buffer_size(wanted_receive_buffer), ignored);
}

udp_forwarder::~udp_forwarder() {
  stop();
}

void udp_forwarder::start() {
  auto& s = *state_;
  if (s.stopped || s.started) return;
  s.started = true;
  asio::co_spawn(s.sock.get_executor(), state::receive_loop(state_), [](std::exception_ptr e) {
    if (e) spdlog::error("udp receive loop failed unexpectedly");
  });
}

void udp_forwarder::stop() {
  state_->stop();
}

const mapping& udp_forwarder::map() const noexcept {
  return state_->map;
}
const std::string& udp_forwarder::local() const noexcept {
  return state_->local;
}
std::size_t udp_forwarder::flow_count() const noexcept {
  return state_->flows.size();
}
const relay::datagram_counters& udp_forwarder::counters() const noexcept {
  return state_->counters;
}

}  // namespace tether::client
