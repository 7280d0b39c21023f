#include "tether/server/server.hpp"

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <list>
#include <vector>

#include "tether/mux/session.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/relay/splice.hpp"
#include "tether/transport/tls.hpp"

namespace tether::server {
namespace {

using asio::ip::tcp;

// What the server knows of one session once it has authenticated.
struct session_context {
  const credential* cred = nullptr;
  std::string peer;
};

// Maps a failed dial to the reason the client will see.
errc dial_failure(const asio::error_code& ec) {
  if (ec == asio::error::connection_refused) return errc::refused;
  if (ec == asio::error::timed_out) return errc::timed_out;
  return errc::unreachable;
}

}  // namespace

struct server::impl {
  impl(asio::any_io_executor ex, server_config c)
      : executor(ex),
        config(std::move(c)),
        tls(config.cert, config.key),
        devices(config.devices),
        acceptor(ex) {}

  asio::any_io_executor executor;
  server_config config;
  transport::tls_server_context tls;
  registry devices;
  tcp::acceptor acceptor;
  relay::buffer_pool pool;
  server_counters counters;
  std::list<std::shared_ptr<mux::session>> sessions;
  bool stopping = false;

  mux::session_settings session_settings() const {
    mux::session_settings s;
    s.stream_window = config.stream_window;
    s.session_window = config.session_window;
    s.max_streams = config.max_streams_per_session;
    s.keepalive = config.keepalive;
    s.handshake_timeout = config.handshake_timeout;
    return s;
  }

  // Compares against every credential so the time taken does not say which one matched.
  const credential* authenticate(std::string_view token) const {
    const credential* found = nullptr;
    for (const auto& c : config.credentials)
      if (token_matches(token, c.token_sha256) && !found) found = &c;
    return found;
  }

  asio::awaitable<void> serve(tcp::socket socket) {
    asio::error_code ignored;
    const auto remote = socket.remote_endpoint(ignored);
    const std::string peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    auto [ec, stream] = co_await transport::accept_tls(tls, std::move(socket),
                                                       config.handshake_timeout);
    if (ec) {
      ++counters.sessions_refused;
      spdlog::info("connection from {} dropped: {}", peer, transport::describe_tls_error(ec));
      co_return;
    }
    auto session = mux::session::make(std::move(stream), session_settings());
    auto ctx = std::make_shared<session_context>();
    ctx->peer = peer;
    auto on_open = [this, ctx](mux::incoming_stream in) { open_stream(std::move(in), ctx); };
    auto auth = [this, ctx](wire::role, std::string_view token) {
      ctx->cred = authenticate(token);
      return ctx->cred ? errc::ok : errc::bad_token;
    };
    if (auto sec = co_await session->start_server(auth, on_open)) {
      ++counters.sessions_refused;
      spdlog::warn("session from {} refused: {}", peer, sec.message());
      co_return;
    }
    ++counters.sessions_accepted;
    spdlog::info("session from {} up, credential '{}'", peer, ctx->cred->name);
    auto it = sessions.insert(sessions.end(), session);
    if (stopping) session->goaway(errc::going_away, "server is shutting down");
    while (!session->closed()) co_await session->wait_closed();
    sessions.erase(it);
  }

  void refuse(mux::incoming_stream& in, const session_context& ctx, errc why,
              const std::string& message) {
    ++counters.streams_refused;
    const auto& t = in.target();
    spdlog::info("stream {}:{} from '{}' ({}) refused: {}: {}", t.device, t.port, ctx.cred->name,
                 ctx.peer, describe(why), message);
    in.refuse(why, message);
  }

  // A stream the client opens: checked against its credential and the registry here, and
  // refused at once, or handed to a coroutine that dials the device and relays.
  void open_stream(mux::incoming_stream in, const std::shared_ptr<session_context>& ctx) {
    const auto& t = in.target();
    if (t.proto != mux::protocol::tcp) {
      refuse(in, *ctx, errc::unsupported, "UDP streams are not supported by this server");
      return;
    }
    if (!ctx->cred->allow.allows(t.device, t.port, t.proto)) {
      refuse(in, *ctx, errc::forbidden,
             "credential '" + ctx->cred->name + "' may not reach " + t.device + ":" +
                 std::to_string(t.port));
      return;
    }
    const device* dev = devices.find(t.device);
    if (!dev) {
      refuse(in, *ctx, errc::unknown_device, "no device '" + t.device + "' in the server's registry");
      return;
    }
    asio::co_spawn(executor, relay_stream(std::move(in), *dev, ctx), [](std::exception_ptr e) {
      if (e) spdlog::error("stream handler failed unexpectedly");
    });
  }

  // Dials the device and relays. This frame lives as long as the stream, so the dial runs
  // in a frame of its own.
  asio::awaitable<void> relay_stream(mux::incoming_stream in, const device& dev,
                                     std::shared_ptr<session_context> ctx) {
    tcp::socket sock(executor);
    auto ch = co_await dial_device(in, dev, *ctx, sock);
    if (!ch) co_return;
    const auto r = co_await relay::splice(sock, *ch, pool);
    counters.bytes_to_devices += r.from_channel;
    counters.bytes_from_devices += r.to_channel;
    spdlog::debug("stream {}:{} closed: {} bytes to device, {} from it{}{}", in.target().device,
                  in.target().port, r.from_channel, r.to_channel, r.error ? ", " : "",
                  r.error ? r.error.message() : "");
  }

  // Connects `sock` to the stream's device port and accepts the stream, or refuses it.
  asio::awaitable<std::unique_ptr<mux::channel>> dial_device(mux::incoming_stream& in,
                                                             const device& dev,
                                                             const session_context& ctx,
                                                             tcp::socket& sock) {
    const auto port = in.target().port;
    if (auto ec = co_await dial(dev.address, port, sock)) {
      const auto why = dial_failure(ec);
      refuse(in, ctx, why, dev.address + ":" + std::to_string(port) + ": " + ec.message());
      co_return nullptr;
    }
    ++counters.streams_opened;
    spdlog::debug("stream {}:{} open for '{}'", in.target().device, port, ctx.cred->name);
    co_return in.accept();
  }

  // Connects to the device within the connect timeout.
  asio::awaitable<asio::error_code> dial(const std::string& host, std::uint16_t port,
                                         tcp::socket& sock) {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer deadline(executor, config.connect_timeout);
    std::vector<tcp::endpoint> endpoints;
    asio::error_code not_literal;
    if (const auto address = asio::ip::make_address(host, not_literal); !not_literal) {
      // No resolver for a literal address: Asio resolves on a thread of its own, a round
      // trip between threads on every new connection.
      endpoints.emplace_back(address, port);
    } else {
      tcp::resolver resolver(executor);
      const std::string service = std::to_string(port);
      auto resolved = co_await (resolver.async_resolve(host, service, use_tuple) ||
                                deadline.async_wait(use_tuple));
      if (resolved.index() == 1) co_return asio::error::timed_out;
      auto [rec, found] = std::get<0>(resolved);
      if (rec) co_return rec;
      endpoints.assign(found.begin(), found.end());
    }
    auto connected = co_await (asio::async_connect(sock, endpoints, use_tuple) ||
                               deadline.async_wait(use_tuple));
    if (connected.index() == 1) co_return asio::error::timed_out;
    co_return std::get<0>(std::get<0>(connected));
  }
};

server::server(asio::any_io_executor ex, server_config config)
    : impl_(std::make_unique<impl>(ex, std::move(config))) {}

server::~server() = default;

const server_counters& server::counters() const noexcept { return impl_->counters; }

tcp::endpoint server::listen() {
  auto& c = impl_->config;
  tcp::resolver resolver(impl_->executor);
  const auto results = resolver.resolve(c.listen.host, std::to_string(c.listen.port),
                                        tcp::resolver::passive);
  const tcp::endpoint ep = *results.begin();
  auto& a = impl_->acceptor;
  a.open(ep.protocol());
  a.set_option(tcp::acceptor::reuse_address(true));
  asio::error_code ec;
  a.bind(ep, ec);
  if (ec) throw std::system_error(ec, "cannot listen on " + c.listen.text());
  a.listen(asio::socket_base::max_listen_connections);
  return a.local_endpoint();
}

asio::awaitable<void> server::run() {
  auto& s = *impl_;
  while (!s.stopping) {
    auto [ec, sock] = co_await s.acceptor.async_accept(use_tuple);
    if (s.stopping) break;
    if (ec) {
      // Out of descriptors and the like: back off briefly instead of spinning.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer pause(s.executor, std::chrono::milliseconds(100));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    asio::co_spawn(s.executor, s.serve(std::move(sock)), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        spdlog::error("session ended by an unexpected error: {}", x.what());
      }
    });
  }
}

asio::awaitable<void> server::shutdown() {
  auto& s = *impl_;
  s.stopping = true;
  asio::error_code ignored;
  s.acceptor.close(ignored);
  for (auto& session : s.sessions) session->goaway(errc::going_away, "server is shutting down");
  const auto deadline = std::chrono::steady_clock::now() + s.config.grace_period;
  asio::steady_timer tick(s.executor);
  auto busy = [&] {
    for (auto& session : s.sessions)
      if (session->stream_count() > 0) return true;
    return false;
  };
  while (busy() && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(std::chrono::milliseconds(50));
    co_await tick.async_wait(use_tuple);
  }
  auto sessions = s.sessions;  // closing one erases it from the list later
  for (auto& session : sessions) session->close();
  spdlog::info("server stopped: {} sessions served, {} streams, {} bytes to devices, {} from them",
               s.counters.sessions_accepted, s.counters.streams_opened,
               s.counters.bytes_to_devices, s.counters.bytes_from_devices);
}

}  // namespace tether::server
