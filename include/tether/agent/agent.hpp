#pragma once
// `tether agent`: runs on a device the server cannot dial. Keeps one outbound session to
// the server (role agent), reconnecting with the same backoff as `tether connect`, and for
// each stream the server opens toward it dials TARGET:PORT (TCP or UDP) on the device's
// side, if its allow list lists the port (docs/AGENTS.md).
//
// Threading: one single-threaded executor; all calls from it.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "tether/agent/allow_list.hpp"
#include "tether/client/dialer.hpp"
#include "tether/client/events.hpp"
#include "tether/mux/session.hpp"

namespace tether::agent {

struct agent_options {
  std::string server;  // for logs and events: "host:port"
  allow_list allow;
  std::string target = "127.0.0.1";  // where the ports are: the device's own address
  std::chrono::milliseconds dial_timeout{5000};
  std::chrono::milliseconds udp_idle{60000};  // a flow with no datagram either way ends
  std::chrono::milliseconds backoff_initial{250};
  std::chrono::milliseconds backoff_max{30000};
};

/// Makes the dialer of the agent's sessions; each session hands the streams the server
/// opens to `on_open`.
using dialer_factory = std::function<client::dialer(mux::session::open_handler on_open)>;

class agent {
 public:
  agent(asio::any_io_executor ex, dialer_factory make_dialer, client::event_sink& events,
        agent_options options);
  ~agent();
  agent(const agent&) = delete;
  agent& operator=(const agent&) = delete;

  /// Keeps a session up until stop() or a failure that retrying cannot fix (bad token,
  /// untrusted server), which it returns. Streams in progress end with their session.
  asio::awaitable<client::dial_outcome> run();

  /// Ends run(): the session closes and its streams with it. Idempotent.
  void stop();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tether::agent
