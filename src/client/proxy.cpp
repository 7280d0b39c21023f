#include "tether/client/proxy.hpp"

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>
#include <random>

#include "tether/client/udp_forwarder.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/relay/splice.hpp"

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

errc reason_of(const asio::error_code& ec) {
  if (ec.category() == tether_category()) return static_cast<errc>(ec.value());
  if (ec == asio::error::connection_refused) return errc::refused;
  if (ec == asio::error::timed_out) return errc::timed_out;
  return errc::session_lost;
}

struct listener {
  mapping map;
  tcp::acceptor acceptor;
  std::string local;
};

}  // namespace

struct proxy::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor ex, std::vector<mapping> m, dialer d, event_sink& e, proxy_options o)
      : executor(ex),
        mappings(std::move(m)),
        dial(std::move(d)),
        events(e),
        options(std::move(o)),
        session_ready(ex, asio::steady_timer::time_point::max()),
        backoff(options.backoff_initial) {}

  asio::any_io_executor executor;
  std::vector<mapping> mappings;
  dialer dial;
  event_sink& events;
  proxy_options options;

  std::vector<std::unique_ptr<listener>> listeners;
  std::vector<std::unique_ptr<udp_forwarder>> forwarders;
  std::shared_ptr<mux::tunnel> current;
  asio::steady_timer session_ready;  // every waiter wakes when it is cancelled
  mux::async_signal stop_signal;
  bool stopping = false;
  dial_outcome fatal;
  std::chrono::milliseconds backoff;
  std::chrono::milliseconds first_retry{0};  // after a failed connect_first()
  std::size_t active = 0;
  relay::buffer_pool pool;
  std::minstd_rand jitter{std::random_device{}()};

  static bool is_fatal(const dial_outcome& o) {
    return o.kind == dial_outcome::failure::bad_credentials ||
           o.kind == dial_outcome::failure::untrusted_server ||
           o.kind == dial_outcome::failure::fatal;
  }

  // Full jitter over [backoff/2, backoff], so many clients don't reconnect in lockstep.
  std::chrono::milliseconds next_delay() {
    const auto d = backoff;
    backoff = std::min(backoff * 2, options.backoff_max);
    std::uniform_int_distribution<long> dist(d.count() / 2, d.count());
    return std::chrono::milliseconds(dist(jitter));
  }

  void became_connected(std::shared_ptr<mux::tunnel> t) {
    current = std::move(t);
    backoff = options.backoff_initial;
    spdlog::info("connected to {}", options.server);
    events.connected(options.server);
    session_ready.cancel();
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
          if (is_fatal(outcome)) {
            fatal = std::move(outcome);
            stopping = true;
            co_return;
          }
          const auto delay = next_delay();
          spdlog::warn("cannot reach {}: {}; retrying in {} ms", options.server, outcome.error,
                       delay.count());
          events.disconnected(outcome.error, delay);
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
      const bool graceful = why == make_error_code(errc::going_away);
      const auto delay = graceful ? std::chrono::milliseconds(0) : next_delay();
      spdlog::warn("session to {} ended: {}; reconnecting in {} ms", options.server,
                   why.message(), delay.count());
      events.disconnected(why.message(), delay);
      if (delay.count() > 0 && !co_await pause(delay)) co_return;
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

  // One accepted connection. Its coroutine frame lives as long as the connection, so it
  // keeps only what the relay needs: opening the stream runs in a frame of its own that is
  // gone once the stream is open.
  asio::awaitable<void> handle(tcp::socket sock, const listener& l) {
    ++active;
    struct leave {
      std::size_t& n;
      ~leave() { --n; }
    } guard{active};
    auto ch = co_await open_stream(l.map, l.local);
    if (!ch) {
      relay::abort_socket(sock);  // refused or no session: not a clean, empty transfer
      co_return;
    }
    const auto r = co_await relay::splice(sock, *ch, pool);
    spdlog::debug("connection on {} to {}:{} closed: {} bytes sent, {} received{}{}", l.local,
                  l.map.device, l.map.device_port, r.to_channel, r.from_channel,
                  r.error ? ", " : "", r.error ? r.error.message() : "");
  }

  // Opens the stream for a connection (or a UDP flow) of `map` on `local`, retrying once on
  // a fresh session when the current one turns out to be gone. Failures are reported and
  // return null.
  asio::awaitable<std::unique_ptr<mux::channel>> open_stream(const mapping& map,
                                                             const std::string& local) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto tunnel = co_await get_tunnel();
      if (!tunnel) {
        const auto msg = stopping ? std::string("shutting down")
                                  : "no tunnel session to " + options.server + " within " +
                                        std::to_string(options.wait_for_session.count() / 1000) +
                                        " s";
        events.stream_error(map, local, errc::session_lost, msg);
        co_return nullptr;
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
        co_return nullptr;
      }
      co_return std::move(ch);
    }
    co_return nullptr;
  }

  // What a UDP forwarder opens its flows with. It holds the proxy weakly: the proxy owns
  // the forwarders. A plain function returning the coroutine, so that the coroutine's frame
  // owns copies of what it uses rather than referring into the std::function.
  flow_opener flow_opener_for(const mapping& map, const std::string& local) {
    return [weak = weak_from_this(), map, local] { return open_flow(weak, map, local); };
  }

  static asio::awaitable<std::unique_ptr<mux::channel>> open_flow(std::weak_ptr<impl> weak,
                                                                  mapping map, std::string local) {
    auto self = weak.lock();
    if (!self || self->stopping) co_return nullptr;
    co_return co_await self->open_stream(map, local);
  }

  // Binds the listener of `m`; returns its real local address.
  std::string bind_tcp(const mapping& m) {
    tcp::resolver resolver(executor);
    const auto results =
        resolver.resolve(m.bind_host, std::to_string(m.local_port), tcp::resolver::passive);
    const tcp::endpoint ep = *results.begin();
    auto l = std::make_unique<listener>(listener{m, tcp::acceptor(executor), ""});
    l->acceptor.open(ep.protocol());
    l->acceptor.set_option(tcp::acceptor::reuse_address(true));
    asio::error_code ec;
    l->acceptor.bind(ep, ec);
    if (ec)
      throw std::system_error(ec, "cannot listen on " + endpoint_text(ep) + " for " + m.text());
    l->acceptor.listen(asio::socket_base::max_listen_connections);
    l->local = endpoint_text(l->acceptor.local_endpoint());
    listeners.push_back(std::move(l));
    return listeners.back()->local;
  }

  // No SO_REUSEADDR here: on UDP it would let a second process bind the same port and take
  // a share of our datagrams instead of failing to start.
  std::string bind_udp(const mapping& m) {
    udp::resolver resolver(executor);
    const auto results =
        resolver.resolve(m.bind_host, std::to_string(m.local_port), udp::resolver::passive);
    const udp::endpoint ep = *results.begin();
    udp::socket sock(executor);
    sock.open(ep.protocol());
    asio::error_code ec;
    sock.bind(ep, ec);
    if (ec)
      throw std::system_error(ec, "cannot listen on " + endpoint_text(ep) + " for " + m.text());
    auto local = endpoint_text(sock.local_endpoint());
    udp_forwarder_options o;
    o.idle = options.udp_idle;
    o.max_flows = options.udp_max_flows;
    auto open = flow_opener_for(m, local);
    forwarders.push_back(
        std::make_unique<udp_forwarder>(std::move(sock), m, local, events, std::move(open), o));
    return local;
  }

  asio::awaitable<void> accept_loop(listener& l) {
    auto self = shared_from_this();
    while (!stopping) {
      auto [ec, sock] = co_await l.acceptor.async_accept(use_tuple);
      if (stopping || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        spdlog::warn("accept on {} failed: {}", l.local, ec.message());
        if (!co_await pause(std::chrono::milliseconds(100))) co_return;
        continue;
      }
      asio::co_spawn(executor, handle(std::move(sock), l), [self](std::exception_ptr e) {
        if (e) spdlog::error("connection handler failed unexpectedly");
      });
    }
  }
};

proxy::proxy(asio::any_io_executor ex, std::vector<mapping> mappings, dialer dial,
             event_sink& events, proxy_options options)
    : impl_(std::make_shared<impl>(ex, std::move(mappings), std::move(dial), events,
                                   std::move(options))) {}

proxy::~proxy() = default;

std::size_t proxy::active_connections() const noexcept { return impl_->active; }

asio::awaitable<dial_outcome> proxy::connect_first() {
  auto outcome = co_await impl_->dial();
  if (outcome.tunnel) {
    impl_->became_connected(std::move(outcome.tunnel));
    co_return dial_outcome{};
  }
  if (!impl::is_fatal(outcome)) {
    const auto delay = impl_->next_delay();
    spdlog::warn("cannot reach {}: {}; retrying in {} ms", impl_->options.server, outcome.error,
                 delay.count());
    impl_->events.disconnected(outcome.error, delay);
    impl_->first_retry = delay;
    co_return dial_outcome{};
  }
  co_return outcome;
}

void proxy::listen() {
  auto& s = *impl_;
  std::vector<std::string> locals;  // reported once every mapping is bound
  for (const auto& m : s.mappings)
    locals.push_back(m.proto == mux::protocol::udp ? s.bind_udp(m) : s.bind_tcp(m));
  for (std::size_t i = 0; i < s.mappings.size(); ++i) {
    const auto& m = s.mappings[i];
    spdlog::info("listening on {} for {}:{}{}", locals[i], m.device, m.device_port,
                 m.proto == mux::protocol::udp ? " udp" : "");
    s.events.listening(m, locals[i]);
  }
}

asio::awaitable<dial_outcome> proxy::run() {
  auto s = impl_;
  for (auto& l : s->listeners)
    asio::co_spawn(s->executor, s->accept_loop(*l), [](std::exception_ptr e) {
      if (e) spdlog::error("accept loop failed unexpectedly");
    });
  for (auto& f : s->forwarders) f->start();
  co_await s->keep_connected();
  stop();
  // Let open connections finish, then end the session. UDP flows ended in stop(): a
  // datagram protocol has nothing to drain.
  const auto deadline = std::chrono::steady_clock::now() + s->options.drain;
  asio::steady_timer tick(s->executor);
  while (s->active > 0 && std::chrono::steady_clock::now() < deadline &&
         s->fatal.kind == dial_outcome::failure::none) {
    tick.expires_after(std::chrono::milliseconds(50));
    co_await tick.async_wait(use_tuple);
  }
  if (s->current) s->current->close();
  s->current.reset();
  co_return std::move(s->fatal);
}

void proxy::stop() {
  auto& s = *impl_;
  if (s.stopping && s.listeners.empty()) return;
  s.stopping = true;
  asio::error_code ignored;
  for (auto& l : s.listeners) l->acceptor.close(ignored);
  for (auto& f : s.forwarders) f->stop();
  s.stop_signal.notify();
  s.session_ready.cancel();
}

}  // namespace tether::client
