#pragma once
// The local proxy: listens on the mapped local ports, turns every accepted connection (TCP)
// or local source address (UDP, see udp_forwarder.hpp) into one channel of the current
// tunnel session, and keeps that session up (reconnecting with capped exponential backoff
// and jitter) while the listeners stay open.
//
// Mappings can be added and removed while it runs (the control socket, `tether up` reloads)
// without touching the traffic of the others. Each mapping has a name, unique in the
// process: proxies of one process share a mapping_names (proxy_options::names).
//
// Threading: one single-threaded executor; all calls from it.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "tether/client/dialer.hpp"
#include "tether/client/events.hpp"
#include "tether/client/mapping.hpp"
#include "tether/client/mapping_names.hpp"
#include "tether/client/mapping_status.hpp"
#include "tether/client/reconnect.hpp"
#include "tether/client/tcp_forwarder.hpp"

namespace tether::client {

struct proxy_options {
  std::string server;                                 // for events: "host:port"
  std::chrono::milliseconds wait_for_session{30000};  // a connection accepted while down
  std::chrono::milliseconds backoff_initial{250};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds drain{10000};  // on stop, for open connections
  // UDP (-U): a flow idle this long ends; flows per mapping (past it the least recently
  // used one is closed). UDP flows are not drained on stop: they end at once.
  std::chrono::milliseconds udp_idle{60000};
  std::size_t udp_max_flows = 4096;
  // False for ssh:// servers: SSH forwards only TCP, so a UDP mapping is refused.
  bool udp_supported = true;
  // Names in use in this process; null: the proxy keeps its own.
  std::shared_ptr<mapping_names> names;
  // Failed dials in a row that are retried before the proxy gives up (connect_first() or
  // run() then returns the last failure). Unset: none until a first session has been made
  // (a mistake in the URL or the network shows at once), then without end. Bad credentials
  // and an untrusted server are never retried.
  std::optional<std::size_t> retries;
  // Lanes (docs/PROTOCOL.md): a second session, on a thread of its own, for the streams
  // that turn bulk. Empty: every stream stays on the one session (SSH servers, --no-lanes).
  lane_dialer bulk_lane;
};


struct add_result {
  mapping_status added;     // when !failure
  mapping_failure failure;  // bad_spec, duplicate_name, in_use, cannot_listen, shutting_down
};

struct listen_failure {
  std::size_t index = 0;    // of the mapping, in the order given to the constructor
  mapping_failure failure;  // in_use ("127.0.0.1:2222 is in use"), cannot_listen
};

struct remove_result {
  mapping_status removed;   // as it was, with the connections left to drain
  mapping_failure failure;  // not_found
};

class proxy {
 public:
  /// `mappings` are bound by listen(), with default names.
  proxy(asio::any_io_executor ex, std::vector<mapping> mappings, dialer dial, event_sink& events,
        proxy_options options);
  ~proxy();
  proxy(const proxy&) = delete;
  proxy& operator=(const proxy&) = delete;

  /// Dials the first session. A failure that retrying cannot fix (bad token, certificate),
  /// or any failure when `retries` allows none, is returned for the caller to report; one
  /// that may be retried is reported as `disconnected` and left to run() to retry.
  asio::awaitable<dial_outcome> connect_first();

  /// Binds every mapping given at construction (a TCP acceptor per -L, a UDP socket per -U)
  /// and reports each as `listening` once all are bound. When one cannot be bound, none
  /// stays bound and its failure is returned, with its index in the constructor's list.
  std::optional<listen_failure> listen();

  /// Serves until stop() or a fatal dial failure, then drains open connections (up to
  /// `drain`) and closes the session. Returns the fatal failure, if that is what ended it.
  asio::awaitable<dial_outcome> run();

  /// Closes the listeners, ends every UDP flow, and makes run() finish. Idempotent.
  void stop();

  /// Binds a new mapping now and reports it as `listening`; it serves at once when run()
  /// is going (else when run() starts). `name` empty: a default name (mapping_names.hpp).
  /// Fails without side effects: bad_spec (a bad name, or UDP on an ssh:// server),
  /// duplicate_name, in_use ("127.0.0.1:2222 is in use"), cannot_listen, shutting_down.
  add_result add(const mapping& m, const std::string& name = {});

  /// Opens one stream to the target of mapping `name` and resets it at once: whether the
  /// server's ACL and the device let it through. For TCP the device sees a connection that
  /// closes at once; for UDP nothing reaches the device (the server only makes a socket).
  /// Waits for a session up to `wait_for_session`. Fails with check_failed (the message
  /// says why), or not_found.
  asio::awaitable<mapping_failure> check(std::string name);

  /// Removes mapping `name`: its port stops listening now and its name is free again. Open
  /// TCP connections drain (stop_mode::drain) or are reset (stop_mode::cut); UDP flows end
  /// at once either way. Other mappings are not touched. Fails with not_found.
  remove_result remove(std::string_view name, stop_mode how);

  /// Every mapping, in the order they were added.
  std::vector<mapping_status> list() const;

  /// The server as given in the options ("host:port").
  const std::string& server() const noexcept;

  /// Open TCP connections (what run() drains on the way out), those of removed mappings
  /// still draining included; UDP flows are not counted.
  std::size_t active_connections() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tether::client
