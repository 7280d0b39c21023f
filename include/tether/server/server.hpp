#pragma once
// The tunnel endpoint: accepts TLS sessions, authenticates them, checks every stream against
// the credential's ACL, dials the device and relays. Logs; never prints.
//
// Threads: the server spreads its sessions over the workers of a worker_pool, one worker
// per session for its whole life. Its own calls (listen, run, shutdown, reload, abort) are
// made on worker 0, the thread that also runs the acceptor; counters() from any thread.
// src/server/server.cpp says who owns which piece of state.

#include <array>
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <memory>
#include <string>
#include <vector>

#include "tether/errc.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/relay/datagram.hpp"
#include "tether/server/agent_directory.hpp"
#include "tether/server/config.hpp"
#include "tether/server/message.hpp"

namespace tether::server {

class worker_pool;

/// A snapshot of the server's counters (they are kept as atomics and may move on while
/// this is read).
struct server_counters {
  std::uint64_t connections_refused = 0;  // closed at accept: a pending-handshake limit
  std::uint64_t sessions_accepted = 0;
  std::uint64_t sessions_refused = 0;  // bad token, bad handshake, session limits
  std::uint64_t limit_refusals = 0;    // sessions and streams refused by a limit
  std::uint64_t streams_opened = 0;
  std::uint64_t streams_refused = 0;
  std::uint64_t bytes_to_devices = 0;
  std::uint64_t bytes_from_devices = 0;
  relay::datagram_counters datagrams;  // of UDP flows that ended

  // For /metrics: what is open now, and how streams went, by protocol and by reason.
  std::uint64_t sessions_open = 0;
  std::uint64_t agents_online = 0;
  std::array<std::uint64_t, mux::protocol_count> streams_opened_by_proto{};  // mux::protocol
  std::array<std::uint64_t, mux::protocol_count> streams_open_by_proto{};
  std::array<std::uint64_t, errc_count> streams_refused_by_reason{};
  // Streams that ended with an error: tether's code, or errc::internal for an I/O error
  // of the device's socket (the log says which).
  std::array<std::uint64_t, errc_count> stream_errors_by_reason{};
};

class server {
 public:
  /// Loads the certificate and key (throws std::runtime_error naming the file). Sessions
  /// go to the workers of `workers` in turn; the acceptor lives on worker 0. `workers`
  /// must outlive the server (its event loops own the server's pending tasks).
  server(worker_pool& workers, server_config config);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds the listening socket (throws std::system_error naming the address on failure)
  /// and returns the bound endpoint (the real port when the config says 0).
  asio::ip::tcp::endpoint listen();

  /// Accepts sessions until shutdown(). Completes when the listener is closed.
  asio::awaitable<void> run();

  /// Graceful stop: no new sessions, GOAWAY to every session on every worker, streams may
  /// finish for the grace period (the wait ends as soon as the last one does), then every
  /// session is closed. Completes when the sessions have been told to close; their tasks
  /// end on their workers soon after.
  asio::awaitable<void> shutdown();

  /// Applies a new config to the running server (SIGHUP). Credentials, devices, limits,
  /// timeouts and windows apply to what starts from now on; a session whose credential is
  /// gone or whose token changed is ended with a reason; the certificate and key are loaded
  /// again. The listen address and the number of workers need a restart: they are kept,
  /// and said so in the returned lines (for the log), with a summary of what is now in
  /// force. Each worker applies the change to its own sessions, soon after this returns.
  /// Throws std::runtime_error, changing nothing, when the certificate or key cannot be
  /// loaded.
  std::vector<std::string> reload(server_config next);

  /// Immediate stop: the listener closes now and every session on every worker is closed
  /// (posted to its worker); their tasks end with errors as the event loops run on.
  void abort();

  /// Thread-safe.
  server_counters counters() const noexcept;

  /// `f` is told of every agent that comes online or goes offline (docs/AGENTS.md). Set it
  /// before run(); it is called from the agent's worker, so it must be thread-safe.
  void on_agent_change(std::function<void(const agent_event&)> f);

  /// The device catalog for `allowed`, with each device's reachability, open streams and
  /// bytes (catalog.hpp): the HTTP API's GET /api/v1/devices. Thread-safe.
  std::string devices_json(const acl& allowed) const;

  /// Whether the registry in force has a device with this id. Thread-safe.
  bool has_device(std::string_view id) const;

  /// The live sessions, at most `max` (session_directory.hpp): GET /api/v1/sessions.
  /// Thread-safe.
  std::string live_sessions_json(std::size_t max) const;

  /// Sends one API message (message.hpp) from the next worker in turn, routed like a
  /// stream: the sender's ACL, the registry, the same upstreams. Completes on the caller's
  /// executor once the payload went out and the reply, if asked for, is in. Thread-safe.
  asio::awaitable<message_outcome> deliver(message_request request);

 private:
  // Shared with every task the server runs, which keep it alive: a task still pending when
  // the server object goes never refers to freed state.
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tether::server
