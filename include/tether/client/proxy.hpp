#pragma once
// The local proxy: listens on the mapped local ports, turns every accepted connection (TCP)
// or local source address (UDP, see udp_forwarder.hpp) into one channel of the current
// tunnel session, and keeps that session up (reconnecting with capped exponential backoff
// and jitter) while the listeners stay open.
//
// Threading: one single-threaded executor; all calls from it.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <vector>

#include "tether/client/dialer.hpp"
#include "tether/client/events.hpp"
#include "tether/client/mapping.hpp"

namespace tether::client {

struct proxy_options {
  std::string server;                                  // for events: "host:port"
  std::chrono::milliseconds wait_for_session{30000};   // a connection accepted while down
  std::chrono::milliseconds backoff_initial{250};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds drain{10000};              // on stop, for open connections
  // UDP (-U): a flow idle this long ends; flows per mapping (past it the least recently
  // used one is closed). UDP flows are not drained on stop: they end at once.
  std::chrono::milliseconds udp_idle{60000};
  std::size_t udp_max_flows = 4096;
};

class proxy {
 public:
  proxy(asio::any_io_executor ex, std::vector<mapping> mappings, dialer dial, event_sink& events,
        proxy_options options);
  ~proxy();
  proxy(const proxy&) = delete;
  proxy& operator=(const proxy&) = delete;

  /// Dials the first session. A failure that retrying cannot fix (bad token, certificate) is
  /// returned for the caller to report; a transient one is reported as `disconnected` and
  /// left to run() to retry.
  asio::awaitable<dial_outcome> connect_first();

  /// Binds every listener (a TCP acceptor per -L, a UDP socket per -U) and reports each as
  /// `listening`. Throws std::system_error naming the address when one cannot be bound.
  void listen();

  /// Serves until stop() or a fatal dial failure, then drains open connections (up to
  /// `drain`) and closes the session. Returns the fatal failure, if that is what ended it.
  asio::awaitable<dial_outcome> run();

  /// Closes the listeners, ends every UDP flow, and makes run() finish. Idempotent.
  void stop();

  /// Open TCP connections (what run() drains on the way out); UDP flows are not counted.
  std::size_t active_connections() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tether::client
