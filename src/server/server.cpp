#include "tether/server/server.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <deque>
#include <list>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rate_limited_log.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/mux/session.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/server/open_files.hpp"
#include "tether/server/router.hpp"
#include "tether/transport/tls.hpp"

namespace tether::server {
namespace {

using asio::ip::tcp;
using clock = std::chrono::steady_clock;

// Descriptors kept free of device streams when max_streams is derived from the open-files
// limit: the listener, sessions and pending handshakes need theirs too.
constexpr std::uint64_t descriptors_kept_for_sessions = 1024;

// Counts by key (a source address, a credential), dropping keys that fall to zero so the
// maps hold only what is in use.
class tally {
 public:
  std::uint32_t operator[](const std::string& key) const {
    const auto it = counts_.find(key);
    return it == counts_.end() ? 0 : it->second;
  }
  void add(const std::string& key) { ++counts_[key]; }
  void remove(const std::string& key) {
    const auto it = counts_.find(key);
    if (it != counts_.end() && --it->second == 0) counts_.erase(it);
  }

 private:
  std::unordered_map<std::string, std::uint32_t> counts_;
};

// Undoes a count when what took it ends; moved into the coroutine that owns the stream.
class count_guard {
 public:
  explicit count_guard(std::function<void()> undo) : undo_(std::move(undo)) {}
  count_guard(count_guard&& o) noexcept : undo_(std::exchange(o.undo_, nullptr)) {}
  count_guard& operator=(count_guard&&) = delete;
  ~count_guard() { release(); }
  void release() {
    if (auto undo = std::exchange(undo_, nullptr)) undo();
  }

 private:
  std::function<void()> undo_;
};

}  // namespace

struct server::impl : std::enable_shared_from_this<server::impl> {
  impl(asio::any_io_executor ex, server_config c)
      : executor(ex),
        open_files(open_files_limit()),
        config(std::move(c)),
        limits(resolve_limits(config.limits)),
        credentials(shared_credentials(config.credentials)),
        tls(config.cert, config.key),
        routes(ex, std::make_shared<const registry>(config.devices), pool,
               {config.connect_timeout, config.udp_idle_timeout}),
        acceptor(ex) {}

  // Raises the open-files limit once, at startup, and logs it.
  static std::uint64_t open_files_limit() {
    const auto files = raise_open_files_limit();
    if (files.now > files.before)
      spdlog::info("open files limit raised from {} to {} (the hard limit)", files.before,
                   files.now);
    else
      spdlog::info("open files limit: {} (hard limit {})", files.now, files.hard);
    return files.now;
  }

  // The config's limits with max_streams = 0 replaced by what the open-files limit leaves
  // room for.
  server_limits resolve_limits(server_limits l) const {
    if (l.max_streams != 0) return l;
    const auto room = open_files > descriptors_kept_for_sessions + l.max_pending_handshakes
                          ? open_files - descriptors_kept_for_sessions - l.max_pending_handshakes
                          : 64;
    l.max_streams = static_cast<std::uint32_t>(std::min<std::uint64_t>(room, 1'000'000));
    spdlog::info("max_streams {} (from the open files limit)", l.max_streams);
    return l;
  }

  static std::vector<std::shared_ptr<const credential>> shared_credentials(
      const std::vector<credential>& list) {
    std::vector<std::shared_ptr<const credential>> out;
    for (const auto& c : list) out.push_back(std::make_shared<const credential>(c));
    return out;
  }

  // What the server knows of one session: set at the hello, read by its streams.
  struct session_context {
    // Shared with the server's list: a reload that keeps the credential swaps in the new
    // one (its ACL applies to the next streams); one that drops it ends the session.
    std::shared_ptr<const credential> cred;
    std::string peer;    // address:port, for logs
    std::string source;  // address alone, for the per-source limits
    std::uint32_t streams = 0;  // being dialed or relayed
    // Dials in flight, at most max_pending_opens_per_session; the streams past it wait
    // their turn here, in order, and are handed a slot as a dial ends.
    std::uint32_t dialing = 0;
    std::deque<std::shared_ptr<mux::async_signal>> dial_queue;
    bool ended = false;  // the session is over: queued streams give up their turn
  };

  asio::any_io_executor executor;
  std::uint64_t open_files = 0;  // the soft limit the server runs with
  server_config config;
  server_limits limits;  // config.limits with max_streams resolved
  std::vector<std::shared_ptr<const credential>> credentials;
  transport::tls_server_context tls;
  relay::buffer_pool pool;
  router routes;
  tcp::acceptor acceptor;
  server_counters counters;
  struct live_session {
    std::shared_ptr<mux::session> session;
    std::shared_ptr<session_context> ctx;
  };
  std::list<live_session> sessions;
  // UDP flows being relayed: a graceful stop ends them at once, since a flow has no end of
  // its own to wait for.
  std::unordered_set<mux::channel*> udp_flows;
  bool stopping = false;

  // Limit bookkeeping.
  std::uint32_t pending_handshakes = 0;
  tally pending_by_source;
  tally sessions_by_source;
  tally sessions_by_credential;
  tally streams_by_credential;
  std::uint32_t streams = 0;
  struct auth_failures {
    std::uint32_t count = 0;
    clock::time_point window_start;
  };
  std::unordered_map<std::string, auth_failures> auth_failures_by_source;
  clock::time_point last_auth_prune;
  asio::steady_timer trim_timer{executor};
  bool trim_scheduled = false;
  rate_limited_log connection_refusals;
  rate_limited_log accept_failures;
  rate_limited_log auth_refusals;
  rate_limited_log datagram_drops{std::chrono::seconds(10)};

  mux::session_settings session_settings() const {
    mux::session_settings s;
    s.stream_window = config.stream_window;
    s.session_window = config.session_window;
    // The server refuses past max_streams_per_session itself, naming the limit in its log;
    // the session's own bound is the backstop.
    s.max_streams = config.max_streams_per_session + 1;
    s.keepalive = config.keepalive;
    s.handshake_timeout = config.handshake_timeout;
    s.max_queued_bytes = limits.max_queued_bytes;
    return s;
  }

  // Compares against every credential so the time taken does not say which one matched.
  std::shared_ptr<const credential> authenticate(std::string_view token) const {
    std::shared_ptr<const credential> found;
    for (const auto& c : credentials)
      if (token_matches(token, c->token_sha256) && !found) found = c;
    return found;
  }

  // ---- accepting ---------------------------------------------------------------------------

  asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    while (!stopping) {
      auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
      if (stopping) break;
      if (ec) {
        // Out of descriptors and the like: back off briefly instead of spinning.
        if (ec == asio::error::no_descriptors || ec == std::errc::too_many_files_open_in_system)
          accept_failures.warn("accept failed: out of file descriptors (open files limit {}); "
                               "new connections wait",
                               open_files);
        else
          accept_failures.warn("accept failed: {}", ec.message());
        asio::steady_timer pause(executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      asio::error_code ignored;
      const auto remote = sock.remote_endpoint(ignored);
      std::string source = remote.address().to_string();
      if (const auto limit = admission_refusal(source); !limit.empty()) {
        ++counters.connections_refused;
        connection_refusals.warn("connection from {} refused: {}", source, limit);
        sock.close(ignored);
        continue;
      }
      ++pending_handshakes;
      pending_by_source.add(source);
      std::string peer = source + ":" + std::to_string(remote.port());
      asio::co_spawn(executor, serve(self, std::move(sock), std::move(source), std::move(peer)),
                     [](std::exception_ptr e) {
                       if (!e) return;
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& x) {
                         spdlog::error("session ended by an unexpected error: {}", x.what());
                       }
                     });
    }
  }

  // Why a new connection from `source` may not even start a handshake, or empty. The
  // words name the limit as it is spelt in the config.
  std::string admission_refusal(const std::string& source) {
    if (auth_blocked(source))
      return "max_auth_failures_per_source (" +
             std::to_string(limits.max_auth_failures_per_source) + " within " +
             std::to_string(limits.auth_failure_window.count()) + " ms) reached";
    if (pending_handshakes >= limits.max_pending_handshakes)
      return "max_pending_handshakes (" + std::to_string(limits.max_pending_handshakes) +
             ") reached";
    if (pending_by_source[source] >= limits.max_pending_handshakes_per_source)
      return "max_pending_handshakes_per_source (" +
             std::to_string(limits.max_pending_handshakes_per_source) + ") reached";
    return {};
  }

  bool auth_blocked(const std::string& source) {
    const auto it = auth_failures_by_source.find(source);
    if (it == auth_failures_by_source.end()) return false;
    if (clock::now() - it->second.window_start >= limits.auth_failure_window) {
      auth_failures_by_source.erase(it);
      return false;
    }
    return it->second.count >= limits.max_auth_failures_per_source;
  }

  // Bad tokens are counted per source in a table of bounded size: a spray from many
  // addresses first makes room by forgetting expired entries (at most once a second, the
  // scan is linear), and past that is not counted rather than growing the table.
  void note_auth_failure(const std::string& source) {
    constexpr std::size_t max_sources = 100'000;
    const auto now = clock::now();
    if (auth_failures_by_source.size() >= max_sources &&
        !auth_failures_by_source.contains(source)) {
      if (now - last_auth_prune < std::chrono::seconds(1)) return;
      last_auth_prune = now;
      std::erase_if(auth_failures_by_source, [&](const auto& kv) {
        return now - kv.second.window_start >= limits.auth_failure_window;
      });
      if (auth_failures_by_source.size() >= max_sources) return;
    }
    auto& f = auth_failures_by_source[source];
    if (f.count == 0 || now - f.window_start >= limits.auth_failure_window) f = {0, now};
    ++f.count;
  }

  // Ends the "pending handshake" of one connection, whatever way the handshake ends.
  struct pending_handshake {
    impl& s;
    const std::string& source;
    bool done = false;
    void finish() {
      if (std::exchange(done, true)) return;
      --s.pending_handshakes;
      s.pending_by_source.remove(source);
      s.schedule_trim();
    }
    ~pending_handshake() { finish(); }
  };

  asio::awaitable<void> serve(std::shared_ptr<impl> self, tcp::socket socket, std::string source,
                              std::string peer) {
    pending_handshake pending{*this, source};
    // No TLS state until the client speaks: a connection that stays silent costs its
    // socket and this frame, not an SSL object and its buffers.
    const auto started = clock::now();
    {
      using namespace asio::experimental::awaitable_operators;
      asio::steady_timer deadline(executor, config.handshake_timeout);
      const auto woke = co_await (socket.async_wait(tcp::socket::wait_read, use_tuple) ||
                                  deadline.async_wait(use_tuple));
      if (woke.index() == 1) {
        ++counters.sessions_refused;
        spdlog::info("connection from {} dropped: nothing sent within {} ms", peer,
                     config.handshake_timeout.count());
        co_return;
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        config.handshake_timeout - (clock::now() - started));
    auto [ec, stream] = co_await transport::accept_tls(
        tls, std::move(socket), std::max(left, std::chrono::milliseconds(1)));
    if (ec) {
      ++counters.sessions_refused;
      if (ec == asio::error::timed_out)
        spdlog::info("connection from {} dropped: TLS handshake not done within {} ms", peer,
                     config.handshake_timeout.count());
      else
        spdlog::info("connection from {} dropped: {}", peer, transport::describe_tls_error(ec));
      co_return;
    }
    auto session = mux::session::make(std::move(stream), session_settings());
    auto ctx = std::make_shared<session_context>();
    ctx->peer = peer;
    ctx->source = source;
    auto on_open = [self, ctx](mux::incoming_stream in) {
      self->open_stream(self, std::move(in), ctx);
    };
    auto auth = [this, ctx](wire::role role, std::string_view token, std::string& why) {
      return admit(role, token, *ctx, why);
    };
    const auto sec = co_await session->start_server(auth, on_open);
    pending.finish();
    if (sec) {
      ++counters.sessions_refused;
      if (sec == errc::timed_out)
        spdlog::info("session from {} refused: no HELLO within {} ms", peer,
                     config.handshake_timeout.count());
      else if (!session->refusal().empty())
        spdlog::warn("session from {} refused: {}", peer, session->refusal());
      else
        spdlog::info("session from {} dropped before its HELLO: {}", peer, sec.message());
      co_return;
    }
    ++counters.sessions_accepted;
    sessions_by_source.add(source);
    sessions_by_credential.add(ctx->cred->name);
    spdlog::info("session from {} up, credential '{}'", peer, ctx->cred->name);
    auto it = sessions.insert(sessions.end(), live_session{session, ctx});
    if (stopping) session->goaway(errc::going_away, "server is shutting down");
    const auto up_since = clock::now();
    const auto why = co_await session->wait_ended();
    ctx->ended = true;
    log_session_end(*session, *ctx, why, clock::now() - up_since);
    if (!ctx->dial_queue.empty()) {  // each woken stream hands its turn to the next
      auto first = std::move(ctx->dial_queue.front());
      ctx->dial_queue.pop_front();
      ++ctx->dialing;
      first->notify();
    }
    sessions.erase(it);
    sessions_by_source.remove(source);
    sessions_by_credential.remove(ctx->cred->name);
    schedule_trim();
  }

  // The audit trail: one line per session, at its end. Never a token.
  static void log_session_end(const mux::session& session, const session_context& ctx,
                              const asio::error_code& why, clock::duration lasted) {
    const auto& n = session.counters();
    const auto how = why == errc::session_lost ? session.end_reason()
                                               : why.message() + " (" + session.end_reason() + ")";
    spdlog::info("session from {} ended after {:.1f} s, credential '{}': {}; {} streams, {} "
                 "bytes from the client, {} to it",
                 ctx.peer, std::chrono::duration<double>(lasted).count(), ctx.cred->name, how,
                 n.streams_opened, n.bytes_in, n.bytes_out);
  }

  // After connections leave, the memory they used goes back to the system, not only to the
  // allocator: a burst of thousands of clients must not leave the server big for good. At
  // most once every few seconds, and never on the path of a live stream.
  void schedule_trim() {
#ifdef __GLIBC__
    if (trim_scheduled || stopping) return;
    trim_scheduled = true;
    trim_timer.expires_after(std::chrono::seconds(2));
    trim_timer.async_wait([self = shared_from_this()](const asio::error_code& ec) {
      self->trim_scheduled = false;
      if (!ec) malloc_trim(0);
    });
#endif
  }

  // Decides on a HELLO: the token, then the session limits.
  errc admit(wire::role role, std::string_view token, session_context& ctx, std::string& why) {
    if (role != wire::role::client) {
      why = "this server does not accept agent sessions";
      return errc::unsupported;
    }
    ctx.cred = authenticate(token);
    if (!ctx.cred) {
      note_auth_failure(ctx.source);
      auth_refusals.warn("bad token from {}", ctx.peer);
      return errc::bad_token;
    }
    if (sessions_by_credential[ctx.cred->name] >= limits.max_sessions_per_credential) {
      ++counters.limit_refusals;
      why = "max_sessions_per_credential (" + std::to_string(limits.max_sessions_per_credential) +
            ") reached for credential '" + ctx.cred->name + "'";
      return errc::limit_reached;
    }
    if (sessions_by_source[ctx.source] >= limits.max_sessions_per_source) {
      ++counters.limit_refusals;
      why = "max_sessions_per_source (" + std::to_string(limits.max_sessions_per_source) +
            ") reached for " + ctx.source;
      return errc::limit_reached;
    }
    return errc::ok;
  }

  // ---- streams -----------------------------------------------------------------------------

  void refuse(mux::incoming_stream& in, const session_context& ctx, errc why,
              const std::string& message, const std::string& detail_for_log = {}) {
    ++counters.streams_refused;
    const auto& t = in.target();
    spdlog::info("stream {}:{} from '{}' ({}) refused: {}: {}", t.device, t.port, ctx.cred->name,
                 ctx.peer, describe(why), detail_for_log.empty() ? message : detail_for_log);
    in.refuse(why, message);
  }

  // Why the server cannot take one more stream for `ctx`, naming the limit, or empty.
  std::string stream_limit_refusal(const session_context& ctx) const {
    if (ctx.streams >= config.max_streams_per_session)
      return "max_streams_per_session (" + std::to_string(config.max_streams_per_session) +
             ") reached";
    if (streams >= limits.max_streams)
      return "max_streams (" + std::to_string(limits.max_streams) + ") reached on the server";
    if (streams_by_credential[ctx.cred->name] >= limits.max_streams_per_credential)
      return "max_streams_per_credential (" + std::to_string(limits.max_streams_per_credential) +
             ") reached for credential '" + ctx.cred->name + "'";
    return {};
  }

  // A stream the client opens: routed (the credential's ACL, the registry), checked
  // against the limits, and refused at once, or handed to a coroutine that connects its
  // upstream and relays.
  void open_stream(const std::shared_ptr<impl>& self, mux::incoming_stream in,
                   const std::shared_ptr<session_context>& ctx) {
    auto route = routes.route(in.target(), *ctx->cred);
    if (!route) {
      refuse(in, *ctx, route.code(), route.message());
      return;
    }
    if (auto limit = stream_limit_refusal(*ctx); !limit.empty()) {
      ++counters.limit_refusals;
      const bool per_session = ctx->streams >= config.max_streams_per_session;
      refuse(in, *ctx, per_session ? errc::too_many_streams : errc::limit_reached, limit);
      return;
    }
    // Counted now, not when the coroutine starts: the other OPENs of the same read are
    // handled before it does.
    ++streams;
    ++ctx->streams;
    streams_by_credential.add(ctx->cred->name);
    count_guard slot([this, ctx] {
      --streams;
      --ctx->streams;
      streams_by_credential.remove(ctx->cred->name);
    });
    asio::co_spawn(executor,
                   relay_stream(self, std::move(slot), std::move(in), std::move(*route), ctx),
                   [](std::exception_ptr e) {
                     if (e) spdlog::error("stream handler failed unexpectedly");
                   });
  }

  // Connects the upstream and relays. This frame lives as long as the stream. `slot`
  // holds the stream's place in the counts.
  asio::awaitable<void> relay_stream([[maybe_unused]] std::shared_ptr<impl> self,
                                     [[maybe_unused]] count_guard slot, mux::incoming_stream in,
                                     std::unique_ptr<upstream> up,
                                     std::shared_ptr<session_context> ctx) {
    if (!co_await take_dial_turn(*ctx)) co_return;
    const auto refused = co_await up->connect();
    end_dial_turn(*ctx);
    if (refused) {
      refuse(in, *ctx, refused->code, refused->message, refused->log_detail);
      co_return;
    }
    ++counters.streams_opened;
    const auto t = in.target();
    const bool udp = t.proto == mux::protocol::udp;
    spdlog::debug("stream {}:{}/{} open for '{}'", t.device, t.port, udp ? "udp" : "tcp",
                  ctx->cred->name);
    auto ch = in.accept();
    if (udp) udp_flows.insert(ch.get());
    const auto r = co_await up->relay(*ch);
    if (udp) udp_flows.erase(ch.get());
    counters.bytes_to_devices += r.bytes_to_device;
    counters.bytes_from_devices += r.bytes_from_device;
    if (!udp) {
      spdlog::debug("stream {}:{} closed: {} bytes to device, {} from it{}{}", t.device, t.port,
                    r.bytes_to_device, r.bytes_from_device, r.error ? ", " : "",
                    r.error ? r.error.message() : "");
      co_return;
    }
    counters.datagrams += r.datagrams;
    const auto drops = r.datagrams.drop_summary();
    spdlog::debug("flow {}:{}/udp for '{}' ended ({}): {} datagrams to device, {} from it{}{}",
                  t.device, t.port, ctx->cred->name, r.error ? r.error.message() : "closed",
                  r.datagrams.from_channel, r.datagrams.to_channel, drops.empty() ? "" : "; ",
                  drops);
    if (r.error == errc::refused)
      spdlog::info("flow {}:{}/udp for '{}' ended: the device port is unreachable (ICMP)",
                   t.device, t.port, ctx->cred->name);
    if (!drops.empty())
      datagram_drops.warn("flow {}:{}/udp for '{}': {}", t.device, t.port, ctx->cred->name,
                          drops);
  }

  // A burst of OPENs (a client accepting a thousand connections at once) is not refused:
  // past max_pending_opens_per_session its streams wait, in order, for a dial to end.
  // False if the session ended meanwhile.
  asio::awaitable<bool> take_dial_turn(session_context& ctx) {
    if (ctx.dialing < limits.max_pending_opens_per_session && ctx.dial_queue.empty()) {
      ++ctx.dialing;
      co_return true;
    }
    auto turn = std::make_shared<mux::async_signal>();
    ctx.dial_queue.push_back(turn);
    co_await turn->wait();  // the slot is handed over with the wake-up
    if (!ctx.ended) co_return true;
    end_dial_turn(ctx);
    co_return false;
  }

  void end_dial_turn(session_context& ctx) {
    if (ctx.dial_queue.empty()) {
      --ctx.dialing;
      return;
    }
    auto next = std::move(ctx.dial_queue.front());
    ctx.dial_queue.pop_front();
    next->notify();
  }

  // ---- reloading ---------------------------------------------------------------------------

  std::vector<std::string> reload(server_config next) {
    std::vector<std::string> notes;
    // Loaded first: a certificate that does not load leaves everything as it was.
    transport::tls_server_context next_tls(next.cert, next.key);
    if (next.listen.text() != config.listen.text()) {
      notes.push_back("listen changed from " + config.listen.text() + " to " +
                      next.listen.text() + ": it takes effect when the server is restarted");
      next.listen = config.listen;
    }
    tls = std::move(next_tls);
    limits = resolve_limits(next.limits);
    credentials = shared_credentials(next.credentials);
    routes.update(std::make_shared<const registry>(next.devices),
                  {next.connect_timeout, next.udp_idle_timeout});
    config = std::move(next);

    // Sessions keep their credential if it is still there with the same token; its new ACL
    // applies to their next streams. The others end now, with the reason.
    auto live = sessions;  // terminating one erases it from the list later
    for (auto& [session, ctx] : live) {
      std::shared_ptr<const credential> same;
      for (const auto& c : credentials)
        if (c->name == ctx->cred->name && c->token_sha256 == ctx->cred->token_sha256) same = c;
      if (same) {
        ctx->cred = std::move(same);
        continue;
      }
      spdlog::info("session from {} closed: credential '{}' was removed or its token changed",
                   ctx->peer, ctx->cred->name);
      session->terminate(errc::bad_token, "credential '" + ctx->cred->name +
                                              "' is no longer accepted by the server");
    }
    notes.push_back(std::to_string(credentials.size()) + " credentials, " +
                    std::to_string(config.devices.size()) + " devices");
    return notes;
  }

  // ---- stopping ----------------------------------------------------------------------------

  asio::awaitable<void> shutdown([[maybe_unused]] std::shared_ptr<impl> self) {
    stopping = true;
    asio::error_code ignored;
    acceptor.close(ignored);
    for (auto& live : sessions) live.session->goaway(errc::going_away, "server is shutting down");
    const auto flows = udp_flows;  // a reset flow leaves the set as its relay ends
    for (auto* flow : flows) flow->reset(errc::going_away);
    const auto deadline = clock::now() + config.grace_period;
    asio::steady_timer tick(executor);
    auto busy = [&] {
      for (auto& live : sessions)
        if (live.session->stream_count() > 0) return true;
      return false;
    };
    while (busy() && clock::now() < deadline) {
      tick.expires_after(std::chrono::milliseconds(50));
      co_await tick.async_wait(use_tuple);
    }
    abort();
    spdlog::info(
        "server stopped: {} sessions served, {} streams, {} bytes to devices, {} from them",
        counters.sessions_accepted, counters.streams_opened, counters.bytes_to_devices,
        counters.bytes_from_devices);
  }

  void abort() {
    stopping = true;
    trim_timer.cancel();
    asio::error_code ignored;
    acceptor.close(ignored);
    auto open = sessions;  // closing one erases it from the list later
    for (auto& live : open) live.session->close();
  }
};

server::server(asio::any_io_executor ex, server_config config)
    : impl_(std::make_shared<impl>(ex, std::move(config))) {}

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

asio::awaitable<void> server::run() { return impl_->accept_loop(impl_); }

asio::awaitable<void> server::shutdown() { return impl_->shutdown(impl_); }

void server::abort() { impl_->abort(); }

std::vector<std::string> server::reload(server_config next) {
  return impl_->reload(std::move(next));
}

}  // namespace tether::server
