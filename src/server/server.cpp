// The tunnel server, spread over the workers of a worker_pool.
//
// Who owns what (docs/THREADS.md tells the same for readers of the docs):
//
// - Worker 0 (the thread that calls worker_pool::run, where the signals are handled too)
//   owns the acceptor, the trim and drain timers, and runs the server's own calls: listen,
//   run, reload, shutdown, abort. It also serves sessions like any other worker.
// - Each worker owns one `worker` below: the sessions it was given (each with its
//   session_context, its streams, its dial queue), its UDP flows, its buffer pool and its
//   router. Only that worker's thread touches them. Another thread that needs something
//   done to them (reload, shutdown, abort) posts a task to the worker's executor.
//   A session and its streams never move: the socket is accepted straight onto the
//   session's worker, and everything the session makes (TLS, mux, device sockets, UDP flows,
//   timers) uses that worker's executor.
// - Shared by every thread, none of it on the data path:
//   * `current`: what a reload replaces (config, resolved limits, credentials, registry,
//     TLS context), an immutable snapshot swapped whole (snapshot.hpp). Readers keep the
//     version they loaded for as long as they need a consistent view.
//   * `books`: the counts the limits are checked against (pending handshakes, sessions and
//     streams per source and credential, bad tokens per source), each check made together
//     with its count under one small mutex (limit_books.hpp).
//   * `counters`: atomics, and a mutex for the datagram totals (added as a flow ends).
//   * `stopping`, `aborted`, `trim_scheduled`: atomic flags.
//   * the rate-limited warnings (a mutex each) and spdlog's loggers (thread-safe).
//   * `open_files`, `workers`, `control`: set at construction, read-only after.
// - session_context::cred is the one thing a reload changes in a session: only the
//   session's worker swaps it, in the task the reload posts there.
// The bytes of a stream (mux session ⇄ relay ⇄ device socket) take no lock anywhere.

#include "tether/server/server.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <deque>
#include <list>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "deliver_message.hpp"
#include "rate_limited_log.hpp"
#include "snapshot.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/mux/session.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/relay/open_files.hpp"
#include "tether/server/agent_directory.hpp"
#include "tether/server/catalog.hpp"
#include "tether/server/limit_books.hpp"
#include "tether/server/moved_streams.hpp"
#include "tether/server/router.hpp"
#include "tether/server/session_directory.hpp"
#include "tether/server/worker_pool.hpp"
#include "tether/transport/tls.hpp"

namespace tether::server {
namespace {

using asio::ip::tcp;
using clock = std::chrono::steady_clock;

// Descriptors kept free of device streams when max_streams is derived from the open-files
// limit: the listener, sessions and pending handshakes need theirs too.
constexpr std::uint64_t descriptors_kept_for_sessions = 1024;

// How long a stream of an agent's session may hold unread bytes while the session's window
// is used up (mux::session::reset_streams_holding_the_window_after): the other clients of
// the device wait that long at most.
constexpr auto agent_hoarding_limit = std::chrono::seconds(3);
// How long a moved stream's device connection waits for the client's claim.
constexpr auto moved_stream_ttl = std::chrono::milliseconds(10000);

// How long a stop waits, after cutting the sessions, for them to end and their streams to
// count their bytes. Each needs its worker to run once, a matter of milliseconds; what is
// still there after this is stuck elsewhere (a stream dialing its device), and the final
// line says so rather than holding the stop.
constexpr auto cut_wait = std::chrono::seconds(2);

// Undoes something when what took it ends; moved into the coroutine that owns it, so it
// also runs when that coroutine's frame is destroyed without resuming (a stopped loop).
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

// The server's counters, updated from every worker.
struct shared_counters {
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::uint64_t> sessions_accepted{0};
  std::atomic<std::uint64_t> sessions_refused{0};
  std::atomic<std::uint64_t> limit_refusals{0};
  std::atomic<std::uint64_t> streams_opened{0};
  std::atomic<std::uint64_t> streams_refused{0};
  std::atomic<std::uint64_t> bytes_to_devices{0};
  std::atomic<std::uint64_t> bytes_from_devices{0};
  std::atomic<std::uint64_t> sessions_ended{0};
  std::array<std::atomic<std::uint64_t>, mux::protocol_count> streams_opened_by_proto{};
  std::array<std::atomic<std::uint64_t>, mux::protocol_count> streams_ended_by_proto{};
  std::array<std::atomic<std::uint64_t>, errc_count> streams_refused_by_reason{};
  std::array<std::atomic<std::uint64_t>, errc_count> stream_errors_by_reason{};

  static std::size_t index_of(errc e) {
    const auto i = static_cast<std::size_t>(e);
    return i < errc_count ? i : static_cast<std::size_t>(errc::internal);
  }
  void stream_refused(errc why) { ++streams_refused_by_reason[index_of(why)]; }
  void stream_ended(mux::protocol p, const asio::error_code& error) {
    ++streams_ended_by_proto[static_cast<std::size_t>(p)];
    if (!error) return;
    const bool ours = error.category() == tether_category();
    ++stream_errors_by_reason[ours ? index_of(static_cast<errc>(error.value()))
                                   : static_cast<std::size_t>(errc::internal)];
  }

  void add_datagrams(const relay::datagram_counters& d) {
    std::lock_guard lock(datagrams_mutex_);
    datagrams_ += d;
  }

  server_counters load() const {
    server_counters c;
    c.connections_refused = connections_refused;
    c.sessions_accepted = sessions_accepted;
    c.sessions_refused = sessions_refused;
    c.limit_refusals = limit_refusals;
    c.streams_opened = streams_opened;
    c.streams_refused = streams_refused;
    c.bytes_to_devices = bytes_to_devices;
    c.bytes_from_devices = bytes_from_devices;
    c.sessions_open =
        c.sessions_accepted - std::min<std::uint64_t>(sessions_ended, c.sessions_accepted);
    for (std::size_t p = 0; p < mux::protocol_count; ++p) {
      c.streams_opened_by_proto[p] = streams_opened_by_proto[p];
      const std::uint64_t ended = streams_ended_by_proto[p];
      c.streams_open_by_proto[p] =
          c.streams_opened_by_proto[p] - std::min(ended, c.streams_opened_by_proto[p]);
    }
    for (std::size_t r = 0; r < errc_count; ++r) {
      c.streams_refused_by_reason[r] = streams_refused_by_reason[r];
      c.stream_errors_by_reason[r] = stream_errors_by_reason[r];
    }
    std::lock_guard lock(datagrams_mutex_);
    c.datagrams = datagrams_;
    return c;
  }

 private:
  mutable std::mutex datagrams_mutex_;
  relay::datagram_counters datagrams_;
};

}  // namespace

struct server::impl : std::enable_shared_from_this<server::impl> {
  // What a reload replaces, whole. Immutable once made.
  struct settings {
    std::uint64_t generation = 0;  // one more at each reload
    server_config config;
    server_limits limits;  // config.limits with max_streams resolved
    std::vector<std::shared_ptr<const credential>> credentials;
    std::shared_ptr<const registry> devices;
    std::shared_ptr<transport::tls_server_context> tls;  // shared: SSL_CTX is thread-safe

    route_settings routing() const { return {config.connect_timeout, config.udp_idle_timeout}; }
  };

  // What the server knows of one session: set at the hello, read by its streams. Owned by
  // the session's worker.
  struct session_context {
    // Shared with the reload's view: a reload that keeps the credential swaps in the new
    // one (its ACL applies to the next streams); one that drops it ends the session.
    std::shared_ptr<const credential> cred;
    std::uint64_t generation = 0;  // of the settings the credential was taken from
    bool counted = false;          // holds a place in the per-source/credential session counts
    std::string peer;              // address:port, for logs
    std::string source;            // address alone, for the per-source limits
    std::uint32_t streams = 0;     // being dialed or relayed
    // Dials in flight, at most max_pending_opens_per_session; the streams past it wait
    // their turn here, in order, and are handed a slot as a dial ends.
    std::uint32_t dialing = 0;
    std::deque<std::shared_ptr<mux::async_signal>> dial_queue;
    bool ended = false;  // the session is over: queued streams give up their turn
    std::shared_ptr<session_entry> listed;  // in `sessions_dir` while the session is up
  };

  struct live_session {
    std::shared_ptr<mux::session> session;
    std::shared_ptr<session_context> ctx;
  };

  // One worker's share of the server; touched only on that worker's thread.
  struct worker {
    worker(asio::any_io_executor ex, std::size_t i, const settings& s)
        : executor(ex), index(i), routes(ex, s.devices, pool, s.routing()) {}
    asio::any_io_executor executor;
    std::size_t index;
    relay::buffer_pool pool;
    router routes;
    std::list<live_session> sessions;
    // UDP flows being relayed: a graceful stop ends them at once, since a flow has no end
    // of its own to wait for.
    std::unordered_set<mux::channel*> udp_flows;
    // Closes the moved streams nobody claimed in time (moved_streams), after the last one
    // parked here; a stop cancels it.
    asio::steady_timer moved_expiry{executor};
  };

  impl(worker_pool& pool, server_config c)
      : workers_pool(pool),
        control(pool.executor(0)),
        open_files(open_files_limit()),
        current(make_settings(std::move(c), 0)),
        acceptor(control) {
    const auto first = current.load();
    for (std::size_t i = 0; i < pool.size(); ++i) {
      workers.push_back(std::make_unique<worker>(pool.executor(i), i, *first));
      workers.back()->routes.use_agents(agents);
      workers.back()->routes.use_activity(activity);
    }
  }

  worker_pool& workers_pool;
  asio::any_io_executor control;  // worker 0's
  std::uint64_t open_files = 0;   // the soft limit the server runs with
  snapshot<settings> current;
  agent_directory agents;  // thread-safe; before `workers`, whose routers point to it
  // What the HTTP API shows of live sessions and devices; thread-safe, before `workers`.
  session_directory sessions_dir;
  device_activity activity;
  std::vector<std::unique_ptr<worker>> workers;
  limit_books books;
  moved_streams moved{4096, moved_stream_ttl};  // thread-safe
  shared_counters counters;
  tcp::acceptor acceptor;
  std::atomic<bool> stopping{false};
  std::atomic<bool> aborted{false};
  asio::steady_timer drain_timer{control};  // a graceful stop waits on it
  asio::steady_timer trim_timer{control};
  std::atomic<bool> trim_scheduled{false};
  rate_limited_log connection_refusals;
  rate_limited_log accept_failures;
  rate_limited_log auth_refusals;
  rate_limited_log early_drops;  // connections that ended before their session began
  rate_limited_log refused_sessions;
  rate_limited_log datagram_drops{std::chrono::seconds(10)};

  // Raises the open-files limit once, at startup, and logs it.
  static std::uint64_t open_files_limit() {
    const auto files = relay::raise_open_files_limit();
    if (files.now > files.before)
      spdlog::info("open files limit raised from {} to {} (the hard limit)", files.before,
                   files.now);
    else
      spdlog::info("open files limit: {} (hard limit {})", files.now, files.hard);
    return files.now;
  }

  // Loads the certificate first: one that does not load throws before anything changes.
  std::shared_ptr<const settings> make_settings(server_config c, std::uint64_t generation) const {
    auto s = std::make_shared<settings>();
    s->tls = std::make_shared<transport::tls_server_context>(c.cert, c.key);
    s->generation = generation;
    s->limits = resolve_limits(c.limits);
    for (const auto& cred : c.credentials)
      s->credentials.push_back(std::make_shared<const credential>(cred));
    s->devices = std::make_shared<const registry>(c.devices);
    s->config = std::move(c);
    return s;
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

  static mux::session_settings session_settings(const settings& s) {
    mux::session_settings m;
    m.stream_window = s.config.stream_window;
    m.session_window = s.config.session_window;
    m.max_stream_window = s.config.max_stream_window;
    // The server refuses past max_streams_per_session itself, naming the limit in its log;
    // the session's own bound is the backstop.
    m.max_streams = s.config.max_streams_per_session + 1;
    m.keepalive = s.config.keepalive;
    m.handshake_timeout = s.config.handshake_timeout;
    m.max_queued_bytes = s.limits.max_queued_bytes;
    m.lanes = true;  // a client that offers them may move its bulk streams between sessions
    return m;
  }

  // Compares against every credential so the time taken does not say which one matched.
  static std::shared_ptr<const credential> authenticate(const settings& s, std::string_view token) {
    std::shared_ptr<const credential> found;
    for (const auto& c : s.credentials)
      if (token_matches(token, c->token_sha256) && !found) found = c;
    return found;
  }

  // ---- accepting (worker 0) ----------------------------------------------------------------

  asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    // The worker the next connection goes to; a connection refused at once does not use
    // up a turn.
    auto* next = workers[workers_pool.next()].get();
    while (!stopping) {
      // Accepted straight onto its worker's event loop: the socket never changes threads.
      auto [ec, sock] = co_await acceptor.async_accept(next->executor, use_tuple);
      if (stopping) break;
      if (ec) {
        // Out of descriptors and the like: back off briefly instead of spinning.
        if (ec == asio::error::no_descriptors || ec == std::errc::too_many_files_open_in_system)
          accept_failures.warn(
              "accept failed: out of file descriptors (open files limit {}); "
              "new connections wait",
              open_files);
        else
          accept_failures.warn("accept failed: {}", ec.message());
        asio::steady_timer pause(control, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      asio::error_code ignored;
      const auto remote = sock.remote_endpoint(ignored);
      std::string source = remote.address().to_string();
      if (const auto limit = books.begin_handshake(source, current.load()->limits);
          !limit.empty()) {
        ++counters.connections_refused;
        connection_refusals.warn("connection from {} refused: {}", source, limit);
        sock.close(ignored);
        continue;
      }
      std::string peer = source + ":" + std::to_string(remote.port());
      asio::co_spawn(next->executor,
                     serve(self, *next, std::move(sock), std::move(source), std::move(peer)),
                     [](std::exception_ptr e) {
                       if (!e) return;
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& x) {
                         spdlog::error("session ended by an unexpected error: {}", x.what());
                       }
                     });
      next = workers[workers_pool.next()].get();
    }
  }

  // ---- a session (on its worker) -----------------------------------------------------------

  // Ends the "pending handshake" of one connection, whatever way the handshake ends.
  struct pending_handshake {
    impl& s;
    const std::string& source;
    bool done = false;
    void finish() {
      if (std::exchange(done, true)) return;
      s.books.end_handshake(source);
      s.schedule_trim();
    }
    ~pending_handshake() { finish(); }
  };

  asio::awaitable<void> serve(std::shared_ptr<impl> self, worker& w, tcp::socket socket,
                              std::string source, std::string peer) {
    pending_handshake pending{*this, source};
    // The settings as they are now decide this handshake, whatever a reload does meanwhile.
    auto s = current.load();
    const auto handshake_timeout = s->config.handshake_timeout;
    // No TLS state until the client speaks: a connection that stays silent costs its
    // socket and this frame, not an SSL object and its buffers.
    const auto started = clock::now();
    {
      using namespace asio::experimental::awaitable_operators;
      asio::steady_timer deadline(w.executor, handshake_timeout);
      const auto woke = co_await (socket.async_wait(tcp::socket::wait_read, use_tuple) ||
                                  deadline.async_wait(use_tuple));
      if (woke.index() == 1) {
        ++counters.sessions_refused;
        early_drops.info("connection from {} dropped: nothing sent within {} ms", peer,
                         handshake_timeout.count());
        co_return;
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        handshake_timeout - (clock::now() - started));
    auto [ec, stream] = co_await transport::accept_tls(
        *s->tls, std::move(socket), std::max(left, std::chrono::milliseconds(1)));
    if (ec) {
      ++counters.sessions_refused;
      if (ec == asio::error::timed_out)
        early_drops.info("connection from {} dropped: TLS handshake not done within {} ms",
                         peer, handshake_timeout.count());
      else
        early_drops.info("connection from {} dropped: {}", peer,
                         transport::describe_tls_error(ec));
      co_return;
    }
    auto session = mux::session::make(std::move(stream), session_settings(*s));
    s.reset();  // a long session must not keep an old config (and its TLS context) alive
    auto ctx = std::make_shared<session_context>();
    ctx->peer = peer;
    ctx->source = source;
    auto on_open = [self, wp = &w, ctx](mux::incoming_stream in) {
      self->open_stream(*wp, std::move(in), ctx);
    };
    auto auth = [this, ctx](wire::role role, std::string_view token, std::string& why) {
      return admit(role, token, *ctx, why);
    };
    const auto sec = co_await session->start_server(auth, on_open);
    pending.finish();
    // The session's place in the per-source and per-credential counts, taken by admit().
    count_guard counted(ctx->counted ? std::function<void()>([this, ctx] {
      books.end_session(ctx->source, ctx->cred->name);
    })
                                     : nullptr);
    if (sec) {
      ++counters.sessions_refused;
      if (sec == errc::timed_out)
        early_drops.info("session from {} refused: no HELLO within {} ms", peer,
                         handshake_timeout.count());
      else if (!session->refusal().empty())
        refused_sessions.warn("session from {} refused: {}", peer, session->refusal());
      else
        early_drops.info("session from {} dropped before its HELLO: {}", peer, sec.message());
      co_return;
    }
    ++counters.sessions_accepted;
    spdlog::info("session from {} up, credential '{}', worker {}{}", peer, ctx->cred->name,
                 w.index, session->peer_bulk_lane() ? " (its client's bulk lane)" : "");
    // An agent's session carries the streams of every client of its device: one client
    // that stops reading must not hold the window they all share.
    if (!ctx->cred->agent_for.empty())
      session->reset_streams_holding_the_window_after(agent_hoarding_limit);
    ctx->listed =
        sessions_dir.add(ctx->cred->name, peer, ctx->cred->agent_for, session->peer_bulk_lane());
    count_guard unlisted([this, ctx] { sessions_dir.remove(ctx->listed); });
    const auto it = w.sessions.insert(w.sessions.end(), live_session{session, ctx});
    count_guard listed([&w, it] { w.sessions.erase(it); });
    // A reload, a stop or an abort that came between the hello and here has already been
    // applied to the sessions listed on this worker: this one catches up by itself.
    if (const auto now = current.load(); now->generation != ctx->generation) keep_or_end(*it, *now);
    if (aborted)
      session->close();
    else if (stopping)
      session->goaway(errc::going_away, "server is shutting down");
    const auto agent = agent_online(w, session, *ctx);
    const auto up_since = clock::now();
    const auto why = co_await session->wait_ended();
    ctx->ended = true;
    if (agent) agent_offline(agent, *session);
    log_session_end(*session, *ctx, why, clock::now() - up_since);
    ++counters.sessions_ended;
    if (stopping) wake_the_stop();
    if (!ctx->dial_queue.empty()) {  // each woken stream hands its turn to the next
      auto first = std::move(ctx->dial_queue.front());
      ctx->dial_queue.pop_front();
      ++ctx->dialing;
      first->notify();
    }
    listed.release();
    counted.release();
    schedule_trim();
  }

  // Decides on a HELLO: the token, then the session limits. On errc::ok the session holds
  // a place in the counts (ctx.counted).
  errc admit(wire::role role, std::string_view token, session_context& ctx, std::string& why) {
    const auto s = current.load();
    ctx.generation = s->generation;
    ctx.cred = authenticate(*s, token);
    if (!ctx.cred) {
      books.note_auth_failure(ctx.source, s->limits);
      auth_refusals.warn("bad token from {}", ctx.peer);
      return errc::bad_token;
    }
    if (const auto wrong = check_role(role, *ctx.cred, why); wrong != errc::ok) return wrong;
    if (const auto first = agent_of(*ctx.cred)) {
      why = why_agent_refused(*first);  // serve() logs the refusal
      return errc::limit_reached;
    }
    if (auto limit = books.begin_session(ctx.source, ctx.cred->name, s->limits); !limit.empty()) {
      ++counters.limit_refusals;
      why = std::move(limit);
      return errc::limit_reached;
    }
    ctx.counted = true;
    return errc::ok;
  }

  // ---- agent sessions (on the agent's worker) -----------------------------------------------

  // An agent credential speaks only as the agent of its device, and a client's never as
  // an agent.
  static errc check_role(wire::role role, const credential& cred, std::string& why) {
    const bool agent_credential = !cred.agent_for.empty();
    if (role == wire::role::agent && !agent_credential) {
      why = "credential '" + cred.name + "' is not an agent credential (no agent_for)";
      return errc::forbidden;
    }
    if (role != wire::role::agent && agent_credential) {
      why = "credential '" + cred.name + "' is the agent credential of device " + cred.agent_for +
            ": it cannot open streams";
      return errc::forbidden;
    }
    return errc::ok;
  }

  // The agent online for the device `cred` is the agent credential of, if any.
  std::shared_ptr<const agent_link> agent_of(const credential& cred) const {
    if (cred.agent_for.empty()) return nullptr;
    return agents.find(cred.agent_for).online;
  }

  // One agent per device: the first stays until its session ends (a vanished peer is
  // noticed by the keepalive), and a second one retries until then.
  static std::string why_agent_refused(const agent_link& first) {
    return "device " + first.device + " already has an agent online (connected from " +
           first.peer + "); one agent per device";
  }

  // Lists an agent's session as its device's agent: streams to the device go to it from
  // now on. Null for a client's session.
  std::shared_ptr<const agent_link> agent_online(worker& w,
                                                 const std::shared_ptr<mux::session>& session,
                                                 const session_context& ctx) {
    if (ctx.cred->agent_for.empty()) return nullptr;
    auto link = std::make_shared<agent_link>();
    link->device = ctx.cred->agent_for;
    link->credential = ctx.cred->name;
    link->peer = ctx.peer;
    link->executor = w.executor;
    link->session = session;
    link->since = std::chrono::system_clock::now();
    if (auto first = agents.attach(link)) {
      // Two arrived together, both past admit(): the second goes.
      session->terminate(errc::limit_reached, why_agent_refused(*first));
      return nullptr;
    }
    spdlog::info("agent for {} online from {}, credential '{}', worker {}", link->device,
                 ctx.peer, ctx.cred->name, w.index);
    return link;
  }

  void agent_offline(const std::shared_ptr<const agent_link>& link, const mux::session& session) {
    agents.detach(link);
    spdlog::info("agent for {} offline: session from {} ended ({})", link->device, link->peer,
                 session.end_reason());
  }

  // The audit trail: one line per session, at its end. Never a token.
  static void log_session_end(const mux::session& session, const session_context& ctx,
                              const asio::error_code& why, clock::duration lasted) {
    const auto& n = session.counters();
    const auto how = why == errc::session_lost ? session.end_reason()
                                               : why.message() + " (" + session.end_reason() + ")";
    spdlog::info(
        "session from {} ended after {:.1f} s, credential '{}': {}; {} streams, {} "
        "bytes from the client, {} to it",
        ctx.peer, std::chrono::duration<double>(lasted).count(), ctx.cred->name, how,
        n.streams_opened, n.bytes_in, n.bytes_out);
  }

  // After connections leave, the memory they used goes back to the system, not only to the
  // allocator: a burst of thousands of clients must not leave the server big for good. At
  // most once every few seconds, and never on the path of a live stream. malloc_trim(0)
  // trims every thread's arena, so one timer (on worker 0) serves all workers.
  void schedule_trim() {
#ifdef __GLIBC__
    if (stopping || trim_scheduled.exchange(true)) return;
    asio::post(control, [self = shared_from_this()] {
      if (self->stopping) {  // abort() has cancelled the timer for good
        self->trim_scheduled = false;
        return;
      }
      self->trim_timer.expires_after(std::chrono::seconds(2));
      self->trim_timer.async_wait([self](const asio::error_code& ec) {
        self->trim_scheduled = false;
        if (!ec) malloc_trim(0);
      });
    });
#endif
  }

  // ---- streams (on the session's worker) ---------------------------------------------------

  void refuse(mux::incoming_stream& in, const session_context& ctx, errc why,
              const std::string& message, const std::string& detail_for_log = {}) {
    ++counters.streams_refused;
    counters.stream_refused(why);
    const auto& t = in.target();
    spdlog::info("stream {}:{} from '{}' ({}) refused: {}: {}", t.device, t.port, ctx.cred->name,
                 ctx.peer, describe(why), detail_for_log.empty() ? message : detail_for_log);
    in.refuse(why, message);
  }

  // A stream the client opens: routed (the credential's ACL, the registry), checked
  // against the limits, and refused at once, or handed to a coroutine that connects its
  // upstream and relays.
  void open_stream(worker& w, mux::incoming_stream in,
                   const std::shared_ptr<session_context>& ctx) {
    if (!ctx->cred->agent_for.empty()) {  // the server opens the streams of an agent's session
      refuse(in, *ctx, errc::forbidden, "an agent's session carries streams the server opens");
      return;
    }
    // A claim of a moved stream is routed once the stream it claims is found.
    std::unique_ptr<upstream> up;
    if (!in.target().resume) {
      auto route = w.routes.route(in.target(), *ctx->cred);
      if (!route) {
        refuse(in, *ctx, route.code(), route.message());
        return;
      }
      up = std::move(*route);
    }
    const auto s = current.load();
    if (ctx->streams >= s->config.max_streams_per_session) {
      ++counters.limit_refusals;
      refuse(in, *ctx, errc::too_many_streams,
             "max_streams_per_session (" + std::to_string(s->config.max_streams_per_session) +
                 ") reached");
      return;
    }
    // Counted now, not when the coroutine starts: the other OPENs of the same read are
    // handled before it does.
    if (auto limit = books.begin_stream(ctx->cred->name, s->limits); !limit.empty()) {
      ++counters.limit_refusals;
      refuse(in, *ctx, errc::limit_reached, limit);
      return;
    }
    ++ctx->streams;
    count_guard slot([this, ctx, name = ctx->cred->name] {
      --ctx->streams;
      stream_ended(name);
    });
    asio::co_spawn(
        w.executor,
        relay_stream(shared_from_this(), w, std::move(slot), std::move(in), std::move(up), ctx),
        [](std::exception_ptr e) {
          if (e) spdlog::error("stream handler failed unexpectedly");
        });
  }

  // A graceful stop waits for the last stream: the one that ends it wakes the stop.
  void stream_ended(const std::string& credential) {
    if (books.end_stream(credential) == 0 && stopping) wake_the_stop();
  }

  // The stop looks again at what is left to end (shutdown, wait_for_the_cut).
  void wake_the_stop() {
    asio::post(control, [self = shared_from_this()] { self->drain_timer.cancel(); });
  }

  // Connects the upstream and relays. This frame lives as long as the stream. `slot`
  // holds the stream's place in the counts.
  asio::awaitable<void> relay_stream([[maybe_unused]] std::shared_ptr<impl> self, worker& w,
                                     [[maybe_unused]] count_guard slot, mux::incoming_stream in,
                                     std::unique_ptr<upstream> up,
                                     std::shared_ptr<session_context> ctx) {
    auto t = in.target();
    // A moved stream goes on here: it counts once in the server's and its device's totals.
    const bool resumed = t.resume.has_value();
    if (resumed) {
      auto claimed = co_await claim_moved(w, in, *ctx);
      if (!claimed) co_return;
      t = std::move(claimed->target);
      up = std::move(claimed->up);
    } else {
      if (!co_await take_dial_turn(*ctx)) co_return;
      const auto refused = co_await up->connect();
      end_dial_turn(*ctx);
      if (refused) {
        refuse(in, *ctx, refused->code, refused->message, refused->log_detail);
        co_return;
      }
    }
    if (!resumed) {
      ++counters.streams_opened;
      ++counters.streams_opened_by_proto[static_cast<std::size_t>(t.proto)];
    }
    const bool udp = t.proto == mux::protocol::udp;
    spdlog::debug("stream {}:{}/{} open for '{}'", t.device, t.port, mux::protocol_name(t.proto),
                  ctx->cred->name);
    auto ch = metered_channel(in.accept(up->movable()), t.proto, ctx->listed,
                              t.proto == mux::protocol::catalog ? nullptr : activity.meter(t.device),
                              resumed);
    if (udp) w.udp_flows.insert(ch.get());
    auto r = co_await up->relay(*ch);
    if (udp) w.udp_flows.erase(ch.get());
    counters.bytes_to_devices += r.bytes_to_device;
    counters.bytes_from_devices += r.bytes_from_device;
    if (r.moved) {  // not an end: its claim goes on with it
      co_await park_moved(w, *ch, std::move(r), t, *ctx);
      co_return;
    }
    counters.stream_ended(t.proto, r.error);
    if (!udp) {
      spdlog::debug("stream {}:{} closed: {} bytes to device, {} from it{}{}", t.device, t.port,
                    r.bytes_to_device, r.bytes_from_device, r.error ? ", " : "",
                    r.error ? r.error.message() : "");
      co_return;
    }
    counters.add_datagrams(r.datagrams);
    const auto drops = r.datagrams.drop_summary();
    spdlog::debug("flow {}:{}/udp for '{}' ended ({}): {} datagrams to device, {} from it{}{}",
                  t.device, t.port, ctx->cred->name, r.error ? r.error.message() : "closed",
                  r.datagrams.from_channel, r.datagrams.to_channel, drops.empty() ? "" : "; ",
                  drops);
    if (r.error == errc::refused)
      spdlog::info("flow {}:{}/udp for '{}' ended: the device port is unreachable (ICMP)", t.device,
                   t.port, ctx->cred->name);
    if (!drops.empty())
      datagram_drops.warn("flow {}:{}/udp for '{}': {}", t.device, t.port, ctx->cred->name, drops);
  }

  // ---- moving streams between a client's sessions (docs/PROTOCOL.md, "Lanes") ------------

  // The client moved the stream: its device connection waits for the claim, then the
  // server's direction ends here with a MOVE after everything it sent (unless a FIN went
  // already: the device had closed its side).
  asio::awaitable<void> park_moved(worker& w, mux::channel& ch, relay_outcome r,
                                   const mux::target& t, const session_context& ctx) {
    const auto token = *r.moved;
    parked_stream p{std::move(r.connection), ctx.cred->name, t, r.bytes_to_device,
                    r.bytes_from_device};
    if (!moved.park(token, std::move(p))) {
      spdlog::warn("stream {}:{} for '{}' could not move: too many moved streams wait for "
                   "their claim ({} in all)", t.device, t.port, ctx.cred->name, moved.size());
      ch.reset(errc::limit_reached);
      moved_streams_ended(1, errc::limit_reached);
      co_return;
    }
    spdlog::debug("stream {}:{} for '{}' moves to another of its sessions", t.device, t.port,
                  ctx.cred->name);
    // Nobody claims it if the client went away meanwhile: it is closed after the wait.
    w.moved_expiry.expires_after(moved_stream_ttl + std::chrono::milliseconds(100));
    w.moved_expiry.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (ec) return;  // a later park moved the deadline, or the server stops
      if (const auto n = self->moved.expire()) {
        spdlog::info("{} moved stream{} closed: not claimed within {} ms", n, n == 1 ? "" : "s",
                     moved_stream_ttl.count());
        self->moved_streams_ended(n, errc::timed_out);
      }
    });
    co_await ch.send_move(token);
  }

  // Moved streams that end before a claim goes on with them: their end is counted here
  // (a stream that moves is counted once, opened where it began and ended where it ends).
  void moved_streams_ended(std::size_t n, errc why) {
    for (std::size_t i = 0; i < n; ++i)
      counters.stream_ended(mux::protocol::tcp, make_error_code(why));
  }

  struct claimed_stream {
    mux::target target;
    std::unique_ptr<upstream> up;
  };

  // The stream a claim names, routed again (a reload may have changed the credential's
  // rights meanwhile) and connected through the connection it left behind. The claim may
  // come before the stream is parked: when the device had closed its side, the client
  // claims as soon as it has that FIN, which may overtake the MOVE's handling there.
  // Refuses `in` when there is none.
  asio::awaitable<std::optional<claimed_stream>> claim_moved(worker& w, mux::incoming_stream& in,
                                                             const session_context& ctx) {
    const auto token = *in.target().resume;
    std::optional<parked_stream> p;
    asio::steady_timer pause(w.executor);
    for (int tries = 0; !(p = moved.claim(token, ctx.cred->name)) && tries < 200 && !aborted;
         ++tries) {
      pause.expires_after(std::chrono::milliseconds(10));
      co_await pause.async_wait(use_tuple);
    }
    if (!p) {
      refuse(in, ctx, errc::timed_out, "no moved stream waits for this claim");
      co_return std::nullopt;
    }
    auto route = w.routes.route(p->target, *ctx.cred);
    if (!route) {
      refuse(in, ctx, route.code(), route.message());
      moved_streams_ended(1, route.code());
      co_return std::nullopt;
    }
    if (!(*route)->movable()) {
      refuse(in, ctx, errc::refused, "the device is no longer reached directly");
      moved_streams_ended(1, errc::refused);
      co_return std::nullopt;
    }
    (*route)->adopt(std::move(p->connection));
    co_return claimed_stream{std::move(p->target), std::move(*route)};
  }

  // A burst of OPENs (a client accepting a thousand connections at once) is not refused:
  // past max_pending_opens_per_session its streams wait, in order, for a dial to end.
  // False if the session ended meanwhile.
  asio::awaitable<bool> take_dial_turn(session_context& ctx) {
    if (ctx.dialing < current.load()->limits.max_pending_opens_per_session &&
        ctx.dial_queue.empty()) {
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

  // ---- reloading (worker 0, then each worker) ----------------------------------------------

  std::vector<std::string> reload(server_config next) {
    std::vector<std::string> notes;
    const auto old = current.load();
    if (next.listen.text() != old->config.listen.text()) {
      notes.push_back("listen changed from " + old->config.listen.text() + " to " +
                      next.listen.text() + ": it takes effect when the server is restarted");
      next.listen = old->config.listen;
    }
    const std::size_t wanted = next.workers != 0 ? next.workers : worker_pool::default_count();
    if (wanted != workers.size()) {
      notes.push_back("workers changed from " + std::to_string(workers.size()) + " to " +
                      std::to_string(wanted) + ": it takes effect when the server is restarted");
    }
    next.workers = old->config.workers;
    const auto s = make_settings(std::move(next), old->generation + 1);  // may throw
    current.store(s);
    // Each worker updates its router and its own sessions; a session that comes up on it
    // later sees the new settings by itself (serve()).
    for (auto& w : workers) {
      asio::post(w->executor, [self = shared_from_this(), wp = w.get(), s] {
        wp->routes.update(s->devices, s->routing());
        auto live = wp->sessions;  // terminating one erases it from the list later
        for (auto& l : live) self->keep_or_end(l, *s);
      });
    }
    notes.push_back(std::to_string(s->credentials.size()) + " credentials, " +
                    std::to_string(s->config.devices.size()) + " devices, " +
                    std::to_string(workers.size()) + " workers");
    return notes;
  }

  // A session keeps its credential if it is still there with the same token; its new ACL
  // applies to its next streams. Otherwise it ends now, with the reason. On its worker.
  static void keep_or_end(live_session& l, const settings& s) {
    auto& ctx = *l.ctx;
    ctx.generation = s.generation;
    for (const auto& c : s.credentials) {
      if (c->name == ctx.cred->name && c->token_sha256 == ctx.cred->token_sha256 &&
          c->agent_for == ctx.cred->agent_for) {
        ctx.cred = c;
        return;
      }
    }
    spdlog::info("session from {} closed: credential '{}' was removed or its token changed",
                 ctx.peer, ctx.cred->name);
    l.session->terminate(errc::bad_token,
                         "credential '" + ctx.cred->name + "' is no longer accepted by the server");
  }

  // ---- stopping (worker 0, then each worker) -----------------------------------------------

  asio::awaitable<void> shutdown([[maybe_unused]] std::shared_ptr<impl> self) {
    stopping = true;
    asio::error_code ignored;
    acceptor.close(ignored);
    for_each_worker([](worker& w) {
      for (auto& l : w.sessions) l.session->goaway(errc::going_away, "server is shutting down");
      const auto flows = w.udp_flows;  // a reset flow leaves the set as its relay ends
      for (auto* flow : flows) flow->reset(errc::going_away);
    });
    // The last stream to end cancels the timer (stream_ended); `stopping` is set before
    // the count is read, so either this sees no stream or that stream sees `stopping`.
    const auto deadline = clock::now() + current.load()->config.grace_period;
    while (!aborted && books.streams() > 0 && clock::now() < deadline) {
      drain_timer.expires_at(deadline);
      co_await drain_timer.async_wait(use_tuple);
    }
    abort();
    co_await wait_for_the_cut();
    const auto c = counters.load();
    const auto left = books.streams();
    spdlog::info(
        "server stopped: {} sessions served, {} streams, {} bytes to devices, {} from them{}",
        c.sessions_accepted, c.streams_opened, c.bytes_to_devices, c.bytes_from_devices,
        c.sessions_open + left == 0
            ? ""
            : fmt::format(" ({} sessions and {} streams still ending: their last bytes are not "
                          "counted)",
                          c.sessions_open, left));
  }

  // abort() only queues the closes: each session ends, and each stream adds its bytes to the
  // counters, on its own worker a moment later. The totals wait for them, briefly, so the
  // last line counts the streams the grace period cut; a stream still dialing its device
  // may take connect_timeout_ms to notice, and the stop does not wait that long.
  asio::awaitable<void> wait_for_the_cut() {
    const auto deadline = clock::now() + cut_wait;
    // The last session or stream to end cancels the timer (serve(), stream_ended).
    while ((counters.load().sessions_open > 0 || books.streams() > 0) && clock::now() < deadline) {
      drain_timer.expires_at(deadline);
      co_await drain_timer.async_wait(use_tuple);
    }
  }

  void abort() {
    stopping = true;
    aborted = true;
    trim_timer.cancel();
    drain_timer.cancel();
    asio::error_code ignored;
    acceptor.close(ignored);
    for_each_worker([](worker& w) {
      auto open = w.sessions;  // closing one erases it from the list later
      for (auto& l : open) l.session->close();
      w.moved_expiry.cancel();
    });
    // Streams half way between two sessions end with the sessions.
    moved_streams_ended(moved.clear(), errc::going_away);
  }

  // Runs `f` on every worker, each on its own thread, soon (posted).
  template <typename F>
  void for_each_worker(F f) {
    for (auto& w : workers)
      asio::post(w->executor, [self = shared_from_this(), wp = w.get(), f] { f(*wp); });
  }
};

server::server(worker_pool& workers, server_config config)
    : impl_(std::make_shared<impl>(workers, std::move(config))) {}

server::~server() = default;

server_counters server::counters() const noexcept {
  auto c = impl_->counters.load();
  c.agents_online = impl_->agents.online().size();
  return c;
}

std::string server::devices_json(const acl& allowed) const {
  return catalog_json(*impl_->current.load()->devices, allowed, &impl_->agents, &impl_->activity);
}

bool server::has_device(std::string_view id) const {
  return impl_->current.load()->devices->find(id) != nullptr;
}

std::string server::live_sessions_json(std::size_t max) const {
  std::size_t total = 0;
  const auto list = impl_->sessions_dir.snapshot(max, &total);
  return sessions_json(list, total);
}

void server::on_agent_change(std::function<void(const agent_event&)> f) {
  impl_->agents.set_listener(std::move(f));
}

tcp::endpoint server::listen() {
  const auto s = impl_->current.load();
  const auto& where = s->config.listen;
  tcp::resolver resolver(impl_->control);
  const auto results =
      resolver.resolve(where.host, std::to_string(where.port), tcp::resolver::passive);
  const tcp::endpoint ep = *results.begin();
  auto& a = impl_->acceptor;
  a.open(ep.protocol());
  a.set_option(tcp::acceptor::reuse_address(true));
  asio::error_code ec;
  a.bind(ep, ec);
  if (ec) throw std::system_error(ec, "cannot listen on " + where.text());
  a.listen(asio::socket_base::max_listen_connections);
  return a.local_endpoint();
}

asio::awaitable<void> server::run() {
  return impl_->accept_loop(impl_);
}

asio::awaitable<void> server::shutdown() {
  return impl_->shutdown(impl_);
}

void server::abort() {
  impl_->abort();
}

asio::awaitable<message_outcome> server::deliver(message_request request) {
  auto& w = *impl_->workers[impl_->workers_pool.next()];
  // On the worker, with its router; the answer comes back to the caller's executor.
  auto task = deliver_message(w.routes, std::move(request));
  co_return co_await asio::co_spawn(w.executor, std::move(task), asio::use_awaitable);
}

std::vector<std::string> server::reload(server_config next) {
  return impl_->reload(std::move(next));
}

}  // namespace tether::server
