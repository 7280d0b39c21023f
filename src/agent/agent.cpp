#include "tether/agent/agent.hpp"

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>

#include "tether/client/reconnect.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/printable.hpp"
#include "tether/relay/datagram.hpp"
#include "tether/relay/dial.hpp"
#include "tether/relay/splice.hpp"

namespace tether::agent {

using namespace asio::experimental::awaitable_operators;

struct agent::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor ex, dialer_factory make, client::event_sink& e, agent_options o)
      : executor(std::move(ex)),
        make_dialer(std::move(make)),
        events(e),
        options(std::move(o)),
        retry(options.backoff_initial, options.backoff_max, client::retry_forever) {}

  asio::any_io_executor executor;
  dialer_factory make_dialer;
  client::event_sink& events;
  agent_options options;
  client::reconnect_policy retry;
  relay::buffer_pool pool;
  std::shared_ptr<mux::tunnel> current;
  mux::async_signal stop_signal;
  bool stopping = false;

  // Sleeps, unless stop() comes first. Returns false when stopping.
  asio::awaitable<bool> pause(std::chrono::milliseconds d) {
    asio::steady_timer t(executor, d);
    co_await (t.async_wait(use_tuple) || stop_signal.wait());
    co_return !stopping;
  }

  asio::awaitable<client::dial_outcome> run() {
    // The handler holds the agent weakly: a stream that arrives as the agent goes is refused.
    auto dial = make_dialer([weak = weak_from_this()](mux::incoming_stream in) {
      if (auto self = weak.lock(); self && !self->stopping) self->take(std::move(in));
    });
    while (!stopping) {
      auto outcome = co_await dial();
      if (stopping) {
        if (outcome.tunnel) outcome.tunnel->close();
        break;
      }
      if (!outcome.tunnel) {
        // A service keeps trying through network trouble, but not with a token or a
        // certificate that will never be accepted.
        if (client::reconnect_policy::is_fatal(outcome)) co_return outcome;
        retry.may_retry();
        const auto delay = retry.next_delay();
        spdlog::warn("cannot reach {}: {}; retrying in {} ms", options.server, outcome.error,
                     delay.count());
        events.disconnected(outcome.error, delay);
        if (!co_await pause(delay)) break;
        continue;
      }
      current = std::move(outcome.tunnel);
      retry.connected();
      spdlog::info("agent connected to {}; allowing ports {} on {}", options.server,
                   options.allow.text(), options.target);
      events.connected(options.server);
      auto t = current;
      auto ended = co_await (t->wait_closed() || stop_signal.wait());
      if (ended.index() == 1) break;
      current.reset();
      const auto why = std::get<0>(ended);
      // GOAWAY from a server that restarts: at once. Anything else, after a backoff.
      const bool graceful = why == make_error_code(errc::going_away);
      const auto delay = graceful ? std::chrono::milliseconds(0) : retry.next_delay();
      spdlog::warn("session to {} ended: {}; reconnecting in {} ms", options.server, why.message(),
                   delay.count());
      events.disconnected(why.message(), delay);
      if (delay.count() > 0 && !co_await pause(delay)) break;
    }
    if (current) current->close();
    current.reset();
    co_return client::dial_outcome{};
  }

  // A stream the server opened: refused at once when its port is not allowed, else dialed
  // and relayed by a coroutine of its own.
  void take(mux::incoming_stream in) {
    const auto t = in.target();
    const bool udp = t.proto == mux::protocol::udp;
    const auto what = std::to_string(t.port) + (udp ? "/udp" : "/tcp");
    if (!options.allow.allows(t.port)) {
      spdlog::info("stream to port {} refused: not in --allow ({})", what, options.allow.text());
      in.refuse(errc::forbidden,
                "port " + what + " is not allowed by the agent of " + printable(t.device));
      return;
    }
    asio::co_spawn(executor, serve(shared_from_this(), std::move(in)),
                   [what](std::exception_ptr e) {
                     if (e) spdlog::error("stream to port {} failed unexpectedly", what);
                   });
  }

  static asio::awaitable<void> serve(std::shared_ptr<impl> self, mux::incoming_stream in) {
    if (in.target().proto == mux::protocol::udp)
      co_await self->serve_udp(std::move(in));
    else
      co_await self->serve_tcp(std::move(in));
  }

  // Refuses `in` for a dial that failed, saying what failed (not the address dialed).
  void refuse_dial(mux::incoming_stream& in, const std::string& what, const asio::error_code& ec) {
    spdlog::info("stream to {}:{} refused: {}", options.target, what, ec.message());
    in.refuse(relay::dial_failure(ec),
              "port " + what + " on the device: " + relay::dial_failure_text(ec));
  }

  asio::awaitable<void> serve_tcp(mux::incoming_stream in) {
    const auto what = std::to_string(in.target().port) + "/tcp";
    asio::ip::tcp::socket sock(executor);
    if (const auto ec = co_await relay::dial_tcp(sock, options.target, in.target().port,
                                                 options.dial_timeout)) {
      refuse_dial(in, what, ec);
      co_return;
    }
    auto ch = in.accept();
    spdlog::debug("stream to port {} open", what);
    const auto r = co_await relay::splice(sock, *ch, pool);
    spdlog::debug("stream to port {} closed: {} bytes to it, {} from it{}{}", what, r.from_channel,
                  r.to_channel, r.error ? ", " : "", r.error ? r.error.message() : "");
  }

  asio::awaitable<void> serve_udp(mux::incoming_stream in) {
    const auto what = std::to_string(in.target().port) + "/udp";
    asio::ip::udp::socket sock(executor);
    if (const auto ec = co_await relay::connect_udp(sock, options.target, in.target().port,
                                                    options.dial_timeout)) {
      refuse_dial(in, what, ec);
      co_return;
    }
    auto ch = in.accept();
    const auto r = co_await relay::relay_datagrams(sock, *ch, options.udp_idle, pool);
    spdlog::debug("flow to port {} ended ({}): {} datagrams to it, {} from it", what,
                  r.error ? r.error.message() : "closed", r.counters.from_channel,
                  r.counters.to_channel);
  }
};

agent::agent(asio::any_io_executor ex, dialer_factory make_dialer, client::event_sink& events,
             agent_options options)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(make_dialer), events,
                                   std::move(options))) {}

agent::~agent() {
  stop();
}

asio::awaitable<client::dial_outcome> agent::run() {
  auto self = impl_;
  co_return co_await self->run();
}

void agent::stop() {
  impl_->stopping = true;
  impl_->stop_signal.notify();
}

}  // namespace tether::agent
