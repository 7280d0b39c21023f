#pragma once
// The control socket of a running client: a unix socket that answers the line-delimited
// JSON requests of docs/CONTROL.md (info, ls, add, rm) about the mappings of one or more
// proxies of this process. `tether map` is its usual client; any program can be.
//
// Bounds: a request line is at most max_control_request bytes, a few connections at once,
// and a connection that sends nothing (or reads nothing) for `idle_timeout` is closed.
// Only the user the process runs as is served: the peer's uid is checked (SO_PEERCRED) on
// top of the socket's mode 0600.
//
// Threading: one single-threaded executor (the proxies'); all calls from it.

#include <asio/any_io_executor.hpp>
#include <chrono>
#include <filesystem>
#include <memory>

#include "tether/client/proxy.hpp"

namespace tether::client {

struct control_server_options {
  std::size_t max_connections = 8;
  std::chrono::milliseconds idle_timeout{60000};
};

class control_server {
 public:
  /// Binds and listens on `path` now, born mode 0600. The caller has checked its folder and
  /// cleared a stale socket (control_path.hpp). Throws control_path_error when it cannot.
  control_server(asio::any_io_executor ex, std::filesystem::path path,
                 control_server_options options = {});
  /// Stops, and removes the socket file if it is still the one this made.
  ~control_server();
  control_server(const control_server&) = delete;
  control_server& operator=(const control_server&) = delete;

  /// The proxies whose mappings requests see, in this order. A proxy must be removed (or
  /// the server stopped) before it is destroyed.
  void add_proxy(proxy& p);
  void remove_proxy(proxy& p);

  /// Starts accepting control connections.
  void start();

  /// Closes the socket and every control connection; a request in progress is not
  /// answered. Idempotent.
  void stop();

  const std::filesystem::path& path() const noexcept;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace tether::client
