#include "tether/client/proxy.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>

#include "bulk_lane.hpp"
#include "tether/client/reconnect.hpp"
#include "tether/client/udp_forwarder.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/mux/use_tuple.hpp"

namespace tether::client {
namespace {

using asio::ip::tcp;
using asio::ip::udp;
using namespace asio::experimental::awaitable_operators;

template <class Endpoint>
std::string endpoint_text(const Endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

std::string host_port_text(const std::string& host, std::uint16_t port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

errc reason_of(const asio::error_code& ec) {
  if (ec.category() == tether_category()) return static_cast<errc>(ec.value());
  if (ec == asio::error::connection_refused) return errc::refused;
  if (ec == asio::error::timed_out) return errc::timed_out;
  return errc::session_lost;
}

// Refusals that are about the mapping itself (its device, its port, the ACL) rather than
// about the session: they make `map ls` show the mapping as failed until a stream opens.
bool is_mapping_failure(errc e) {
  switch (e) {
    case errc::unknown_device:
    case errc::forbidden:
    case errc::refused:
    case errc::unreachable:
    case errc::timed_out:
    case errc::unsupported:
    case errc::ssh_forwarding_denied:
      return true;
    default:
      return false;
  }
}

// What the streams of one mapping said last: a failure of the mapping's own, cleared by the
// next stream that opens. Shared with its opener, which outlives a removed mapping's entry.
struct mapping_health {
  std::string error;
};

struct opened_stream {
  std::unique_ptr<mux::channel> ch;
  std::string error;  // when !ch
  errc reason = errc::session_lost;
};

mapping_failure bind_failure(const asio::error_code& ec, const std::string& where) {
  if (ec == asio::error::address_in_use) return {control_errc::in_use, where + " is in use"};
  return {control_errc::cannot_listen, "cannot listen on " + where + ": " + ec.message()};
}

}  // namespace

struct proxy::impl : std::enable_shared_from_this<impl> {
  // One mapping: its listener (exactly one of tcp, udp) and what `map ls` shows of it.
  struct entry {
    std::string name;
    mapping map;
    std::string local;
    std::chrono::system_clock::time_point since;
    std::shared_ptr<mapping_health> health = std::make_shared<mapping_health>();
    std::unique_ptr<tcp_forwarder> tcp;
    std::unique_ptr<udp_forwarder> udp;
  };

  impl(asio::any_io_executor ex, std::vector<mapping> m, dialer d, event_sink& e, proxy_options o)
      : executor(ex),
        initial(std::move(m)),
        dial(std::move(d)),
        events(e),
        options(std::move(o)),
        names(options.names ? options.names : std::make_shared<mapping_names>()),
        session_ready(ex, asio::steady_timer::time_point::max()),
        retry(options.backoff_initial, options.backoff_max, options.retries) {}

  asio::any_io_executor executor;
  std::vector<mapping> initial;  // bound by listen()
  dialer dial;
  event_sink& events;
  proxy_options options;
  std::shared_ptr<mapping_names> names;

  std::vector<std::unique_ptr<entry>> entries;  // in the order added
  // Forwarders of removed mappings whose connections are still draining.
  std::vector<std::unique_ptr<tcp_forwarder>> retired;
  std::shared_ptr<mux::tunnel> current;
  asio::steady_timer session_ready;  // every waiter wakes when it is cancelled
  mux::async_signal stop_signal;
  mux::async_signal connection_ended;  // run() waits on it while draining
  bool running = false;
  bool stopping = false;
  bool listeners_closed = false;
  dial_outcome fatal;
  reconnect_policy retry;
  std::chrono::milliseconds first_retry{0};  // after a failed connect_first()
  std::shared_ptr<relay::buffer_pool> pool = std::make_shared<relay::buffer_pool>();

  // Lanes: made with the first session; it dials once a stream first turns bulk.
  std::shared_ptr<bulk_lane> lane;

  void make_lane() {
    if (!options.bulk_lane || lane) return;
    lane = std::make_shared<bulk_lane>(options.bulk_lane, options.server);
    for (auto& e : entries)
      if (e->tcp) e->tcp->use_lane(lane);
  }

  void became_connected(std::shared_ptr<mux::tunnel> t) {
    make_lane();
    current = std::move(t);
    retry.connected();
    spdlog::info("connected to {}", options.server);
    events.connected(options.server);
    session_ready.cancel();
  }

  // A dial that failed and is retried in `delay`: a warning and a `disconnected` event. A
  // peer that answered as no tether server would is named in the reason ("127.0.0.1:22 is
  // not a TLS server ..."): the error alone has no subject.
  void failed_dial(const dial_outcome& outcome, std::chrono::milliseconds delay) {
    spdlog::warn("{}; retrying in {} ms", outcome.sentence(options.server), delay.count());
    events.disconnected(outcome.answered ? outcome.sentence(options.server) : outcome.error, delay);
  }

  // Sleeps, unless stop() comes first. Returns false when stopping.
  asio::awaitable<bool> pause(std::chrono::milliseconds d) {
    asio::steady_timer t(executor, d);
    co_await (t.async_wait(use_tuple) || stop_signal.wait());
    co_return !stopping;
  }

  asio::awaitable<void> keep_connected() {
    if (first_retry.count() > 0 && !co_await pause(first_retry)) co_return;
    while (!stopping) {
      if (!current) {
        auto outcome = co_await dial();
        if (stopping) {
          if (outcome.tunnel) outcome.tunnel->close();
          co_return;
        }
        if (!outcome.tunnel) {
          if (reconnect_policy::is_fatal(outcome) || !retry.may_retry()) {
            fatal = std::move(outcome);
            stopping = true;
            co_return;
          }
          const auto delay = retry.next_delay();
          failed_dial(outcome, delay);
          if (!co_await pause(delay)) co_return;
          continue;
        }
        became_connected(std::move(outcome.tunnel));
      }
      auto t = current;
      auto ended = co_await (t->wait_closed() || stop_signal.wait());
      if (ended.index() == 1) co_return;  // stopping; run() closes the session after draining
      const auto why = std::get<0>(ended);
      // Streams still open on a session that said GOAWAY keep it alive through their channels.
      current.reset();
      if (why == make_error_code(errc::going_away)) {
        const auto continuing = open_streams();
        spdlog::info(
            "{} is going away: {} open stream{} continue{} on its session until they "
            "end; reconnecting now",
            options.server, continuing, continuing == 1 ? "" : "s", continuing == 1 ? "s" : "");
        events.going_away(continuing);
        continue;
      }
      const auto delay = retry.next_delay();
      spdlog::warn("session to {} ended: {}; reconnecting in {} ms", options.server, why.message(),
                   delay.count());
      events.disconnected(why.message(), delay);
      if (!co_await pause(delay)) co_return;
    }
  }

  // The current session, waiting for one (bounded) while the tunnel is down.
  asio::awaitable<std::shared_ptr<mux::tunnel>> get_tunnel() {
    asio::steady_timer deadline(executor, options.wait_for_session);
    while (!current && !stopping) {
      auto woke = co_await (session_ready.async_wait(use_tuple) || deadline.async_wait(use_tuple));
      if (woke.index() == 1) break;
    }
    co_return current;
  }

  // Opens the stream for a connection (or a UDP flow, or a check) of `map` on `local`,
  // retrying once on a fresh session when the current one turns out to be gone. Failures
  // are reported as events and in `health` (those of the mapping's own).
  asio::awaitable<opened_stream> open_stream(const mapping& map, const std::string& local,
                                             mapping_health& health) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto tunnel = co_await get_tunnel();
      if (!tunnel) {
        auto msg = stopping ? std::string("shutting down")
                            : "no tunnel session to " + options.server + " within " +
                                  std::to_string(options.wait_for_session.count() / 1000) + " s";
        events.stream_error(map, local, errc::session_lost, msg);
        opened_stream failed;
        failed.error = std::move(msg);
        co_return failed;
      }
      mux::target t{map.device, map.device_port, map.proto};
      auto [ec, ch] = co_await tunnel->open(t);
      const bool session_gone =
          ec == make_error_code(errc::session_lost) || ec == make_error_code(errc::going_away);
      if (session_gone && attempt == 0) {
        if (current == tunnel) current.reset();  // the keeper notices and reconnects
        continue;
      }
      if (ec) {
        const auto why = reason_of(ec);
        auto msg = ec.category() == tether_category() ? std::string(describe(why)) : ec.message();
        if (const auto detail = tunnel->last_open_error(); !detail.empty() && detail != msg)
          msg += " (" + detail + ")";
        spdlog::warn("stream to {}:{} failed: {}", map.device, map.device_port, msg);
        events.stream_error(map, local, why, msg);
        if (is_mapping_failure(why) && !map.socks) health.error = msg;
        opened_stream failed;
        failed.error = std::move(msg);
        failed.reason = why;
        co_return failed;
      }
      health.error.clear();
      opened_stream opened;
      opened.ch = std::move(ch);
      co_return opened;
    }
    opened_stream lost;
    lost.error = "the session to " + options.server + " was lost";
    co_return lost;
  }

  // What a forwarder opens its streams with. It holds the proxy weakly: the proxy owns the
  // forwarders. A plain function returning the coroutine, so that the coroutine's frame
  // owns copies of what it uses rather than referring into the std::function.
  flow_opener opener_for(const mapping& map, const std::string& local,
                         std::shared_ptr<mapping_health> health) {
    return [weak = weak_from_this(), map, local, health] {
      return open_for(weak, map, local, health);
    };
  }

  // The same for a SOCKS listener: the target comes with each connection.
  target_opener socks_opener_for(const mapping& map, const std::string& local,
                                 std::shared_ptr<mapping_health> health) {
    return [weak = weak_from_this(), map, local, health](mux::target t) {
      mapping to = map;
      to.device = std::move(t.device);
      to.device_port = t.port;
      return open_to(weak, std::move(to), local, health);
    };
  }

  static asio::awaitable<opened_to> open_to(std::weak_ptr<impl> weak, mapping map,
                                            std::string local,
                                            std::shared_ptr<mapping_health> health) {
    opened_to out;
    auto self = weak.lock();
    if (!self || self->stopping) co_return out;
    auto opened = co_await self->open_stream(map, local, *health);
    out.ch = std::move(opened.ch);
    out.reason = opened.reason;
    co_return out;
  }

  static asio::awaitable<std::unique_ptr<mux::channel>> open_for(
      std::weak_ptr<impl> weak, mapping map, std::string local,
      std::shared_ptr<mapping_health> health) {
    auto self = weak.lock();
    if (!self || self->stopping) co_return nullptr;
    auto opened = co_await self->open_stream(map, local, *health);
    co_return std::move(opened.ch);
  }

  // ---- the mapping table ----

  entry* find(std::string_view name) const {
    for (const auto& e : entries)
      if (e->name == name) return e.get();
    return nullptr;
  }

  void forget_drained() {
    std::erase_if(retired, [](const auto& f) { return f->open_connections() == 0; });
  }

  std::size_t active() const {
    std::size_t n = 0;
    for (const auto& e : entries)
      if (e->tcp) n += e->tcp->open_connections();
    for (const auto& f : retired) n += f->open_connections();
    return n;
  }

  // Streams open now: a TCP connection or a UDP flow is one each.
  std::size_t open_streams() const {
    std::size_t n = active();
    for (const auto& e : entries)
      if (e->udp) n += e->udp->flow_count();
    return n;
  }

  // Binds `m` into `e`; fails without side effects.
  mapping_failure bind(entry& e, const mapping& m) {
    e.map = m;
    asio::error_code ec;
    if (m.proto == mux::protocol::udp) {
      udp::resolver resolver(executor);
      const auto results =
          resolver.resolve(m.bind_host, std::to_string(m.local_port), udp::resolver::passive, ec);
      if (ec || results.empty())
        return {control_errc::cannot_listen,
                "cannot resolve bind address '" + m.bind_host + "': " + ec.message()};
      const udp::endpoint ep = *results.begin();
      // No SO_REUSEADDR here: on UDP it would let a second process bind the same port and
      // take a share of our datagrams instead of failing to start.
      udp::socket sock(executor);
      sock.open(ep.protocol(), ec);
      if (!ec) sock.bind(ep, ec);
      if (ec) return bind_failure(ec, endpoint_text(ep));
      e.local = endpoint_text(sock.local_endpoint());
      udp_forwarder_options o;
      o.idle = options.udp_idle;
      o.max_flows = options.udp_max_flows;
      e.udp = std::make_unique<udp_forwarder>(std::move(sock), m, e.local, events,
                                              opener_for(m, e.local, e.health), o);
      return {};
    }
    tcp::resolver resolver(executor);
    const auto results =
        resolver.resolve(m.bind_host, std::to_string(m.local_port), tcp::resolver::passive, ec);
    if (ec || results.empty())
      return {control_errc::cannot_listen,
              "cannot resolve bind address '" + m.bind_host + "': " + ec.message()};
    const tcp::endpoint ep = *results.begin();
    tcp::acceptor acceptor(executor);
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return bind_failure(ec, endpoint_text(ep));
    e.local = endpoint_text(acceptor.local_endpoint());
    std::weak_ptr<impl> weak = weak_from_this();
    auto ended = [weak] {
      if (auto s = weak.lock()) s->connection_ended.notify();
    };
    if (m.socks)
      e.tcp = std::make_unique<tcp_forwarder>(std::move(acceptor), m, e.local,
                                              socks_opener_for(m, e.local, e.health), pool, ended);
    else
      e.tcp = std::make_unique<tcp_forwarder>(std::move(acceptor), m, e.local,
                                              opener_for(m, e.local, e.health), pool, ended);
    if (lane) e.tcp->use_lane(lane);
    return {};
  }

  void start(entry& e) {
    if (e.tcp) e.tcp->start();
    if (e.udp) e.udp->start();
  }

  void announce(const entry& e) {
    if (e.map.socks)
      spdlog::info("listening on {} for SOCKS5 (mapping {})", e.local, e.name);
    else
      spdlog::info("listening on {} for {}:{}{} (mapping {})", e.local, e.map.device,
                   e.map.device_port, e.map.proto == mux::protocol::udp ? " udp" : "", e.name);
    events.listening(e.map, e.name, e.local);
  }

  mapping_status status_of(const entry& e) const {
    mapping_status st;
    st.name = e.name;
    st.server = options.server;
    st.local = e.local;
    st.device = e.map.device;
    st.device_port = e.map.device_port;
    st.proto = e.map.proto;
    st.since = e.since;
    if (!current) {
      st.state = mapping_state::session_down;
    } else if (!e.health->error.empty()) {
      st.state = mapping_state::failed;
      st.error = e.health->error;
    }
    if (e.tcp) {
      st.connections = e.tcp->open_connections();
      st.total = e.tcp->connections_total();
      st.bytes_out = e.tcp->bytes_out();
      st.bytes_in = e.tcp->bytes_in();
    }
    if (e.udp) {
      const auto& c = e.udp->counters();
      st.connections = e.udp->flow_count();
      st.bytes_out = c.bytes_to_channel;
      st.bytes_in = c.bytes_from_channel;
      st.datagrams_out = c.to_channel;
      st.datagrams_in = c.from_channel;
      st.dropped = c.dropped_total();
    }
    return st;
  }

  void close_listeners() {
    if (listeners_closed) return;
    listeners_closed = true;
    for (auto& e : entries) {
      if (e->tcp) e->tcp->stop(stop_mode::drain);
      if (e->udp) e->udp->stop();
    }
  }
};

proxy::proxy(asio::any_io_executor ex, std::vector<mapping> mappings, dialer dial,
             event_sink& events, proxy_options options)
    : impl_(std::make_shared<impl>(ex, std::move(mappings), std::move(dial), events,
                                   std::move(options))) {}

proxy::~proxy() {
  for (const auto& e : impl_->entries) impl_->names->release(e->name);
}

const std::string& proxy::server() const noexcept {
  return impl_->options.server;
}

std::size_t proxy::active_connections() const noexcept {
  return impl_->active();
}

asio::awaitable<dial_outcome> proxy::connect_first() {
  auto outcome = co_await impl_->dial();
  if (outcome.tunnel) {
    impl_->became_connected(std::move(outcome.tunnel));
    co_return dial_outcome{};
  }
  if (!reconnect_policy::is_fatal(outcome) && impl_->retry.may_retry()) {
    const auto delay = impl_->retry.next_delay();
    impl_->failed_dial(outcome, delay);
    impl_->first_retry = delay;
    co_return dial_outcome{};
  }
  co_return outcome;
}

std::optional<listen_failure> proxy::listen() {
  auto& s = *impl_;
  if (s.stopping) return std::nullopt;  // stopped before it was asked to listen
  std::vector<std::unique_ptr<impl::entry>> bound;  // reported once every mapping is bound
  for (std::size_t i = 0; i < s.initial.size(); ++i) {
    auto e = std::make_unique<impl::entry>();
    if (auto failure = s.bind(*e, s.initial[i])) {
      for (auto& b : bound) {
        if (b->tcp) b->tcp->stop(stop_mode::cut);
        if (b->udp) b->udp->stop();
      }
      return listen_failure{i, std::move(failure)};
    }
    bound.push_back(std::move(e));
  }
  s.initial.clear();
  for (auto& e : bound) {
    e->name = s.names->claim_default(e->map);
    e->since = std::chrono::system_clock::now();
    if (s.running) s.start(*e);
    s.announce(*e);
    s.entries.push_back(std::move(e));
  }
  return std::nullopt;
}

add_result proxy::add(const mapping& m, const std::string& name) {
  auto& s = *impl_;
  add_result r;
  if (s.stopping) {
    r.failure = {control_errc::shutting_down, "the client is shutting down"};
    return r;
  }
  if (m.proto == mux::protocol::udp && !s.options.udp_supported) {
    r.failure = {control_errc::bad_spec, "UDP needs a tls:// server (SSH forwards only TCP)"};
    return r;
  }
  if (!name.empty()) {
    auto checked = check_mapping_name(name);
    if (!checked) {
      r.failure = {control_errc::bad_spec, checked.message()};
      return r;
    }
    if (s.names->taken(name)) {
      r.failure = {control_errc::duplicate_name, "a mapping named '" + name + "' exists"};
      return r;
    }
  }
  auto e = std::make_unique<impl::entry>();
  if (auto failure = s.bind(*e, m)) {
    r.failure = std::move(failure);
    return r;
  }
  if (name.empty()) {
    e->name = s.names->claim_default(m);
  } else {
    e->name = name;
    s.names->claim(name);
  }
  e->since = std::chrono::system_clock::now();
  if (s.running) s.start(*e);
  s.announce(*e);
  s.forget_drained();
  r.added = s.status_of(*e);
  s.entries.push_back(std::move(e));
  return r;
}

asio::awaitable<mapping_failure> proxy::check(std::string name) {
  // Results are named before co_return: g++ 12 mishandles braced temporaries holding a
  // std::string in coroutines.
  mapping_failure failure;
  auto s = impl_;  // this proxy may be destroyed while the stream opens
  const auto* e = s->find(name);
  if (!e) {
    failure = {control_errc::not_found, "no mapping named '" + name + "'"};
    co_return failure;
  }
  const auto map = e->map;
  const auto local = e->local;
  const auto health = e->health;
  auto opened = co_await s->open_stream(map, local, *health);
  if (!opened.ch) {
    failure = {
        control_errc::check_failed,
        "stream to " + host_port_text(map.device, map.device_port) + " failed: " + opened.error};
    co_return failure;
  }
  opened.ch->reset(errc::stream_reset);  // a probe: nothing to say to the device
  co_return failure;
}

remove_result proxy::remove(std::string_view name, stop_mode how) {
  auto& s = *impl_;
  remove_result r;
  const auto it = std::find_if(s.entries.begin(), s.entries.end(),
                               [&](const auto& e) { return e->name == name; });
  if (it == s.entries.end()) {
    r.failure = {control_errc::not_found, "no mapping named '" + std::string(name) + "'"};
    return r;
  }
  auto& e = **it;
  if (e.tcp) e.tcp->stop(how);
  if (e.udp) e.udp->stop();
  r.removed = s.status_of(e);
  spdlog::info("mapping {} on {} removed{}", e.name, e.local,
               e.tcp && e.tcp->open_connections() > 0
                   ? "; " + std::to_string(e.tcp->open_connections()) + " connections left to drain"
                   : std::string());
  if (e.tcp && e.tcp->open_connections() > 0) s.retired.push_back(std::move(e.tcp));
  s.names->release(e.name);
  s.entries.erase(it);
  s.forget_drained();
  return r;
}

std::vector<mapping_status> proxy::list() const {
  std::vector<mapping_status> out;
  out.reserve(impl_->entries.size());
  for (const auto& e : impl_->entries) out.push_back(impl_->status_of(*e));
  return out;
}

asio::awaitable<dial_outcome> proxy::run() {
  auto s = impl_;
  s->running = true;
  if (!s->listeners_closed)
    for (auto& e : s->entries) s->start(*e);
  co_await s->keep_connected();
  stop();
  // Let open connections finish, then end the session. UDP flows ended in stop(): a
  // datagram protocol has nothing to drain.
  asio::steady_timer deadline(s->executor, s->options.drain);
  while (s->active() > 0 && s->fatal.kind == dial_outcome::failure::none) {
    auto woke = co_await (s->connection_ended.wait() || deadline.async_wait(use_tuple));
    if (woke.index() == 1) break;
  }
  if (s->current) s->current->close();
  s->current.reset();
  if (s->lane) s->lane->stop();
  co_return std::move(s->fatal);
}

void proxy::stop() {
  auto& s = *impl_;
  s.stopping = true;
  s.close_listeners();
  s.stop_signal.notify();
  s.session_ready.cancel();
}

}  // namespace tether::client
