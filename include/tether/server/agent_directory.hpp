#pragma once
// Which agent devices are online: for each device id, the session its agent keeps open
// (docs/AGENTS.md). Shared by every worker of the server: an agent's session lives on one
// worker, the clients that reach its device on any.
//
// Threads: every call is thread-safe (one small mutex, taken when an agent comes or goes
// and when a stream to an agent device is routed, never per byte). A link's session is
// touched only on the link's executor: other threads post there (agent_upstream.cpp).

#include <asio/any_io_executor.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tether::mux {
class session;
}

namespace tether::server {

/// One agent's session, as the directory knows it. Immutable once made, except that the
/// session it points to may end at any time.
struct agent_link {
  std::string device;
  std::string credential;               // its name, for logs
  std::string peer;                     // address:port the agent connected from
  asio::any_io_executor executor;       // the worker the session lives on
  std::weak_ptr<mux::session> session;  // lock only on `executor`
  std::chrono::system_clock::time_point since;
};

/// An agent came online or went offline, for the server's events (`--json`).
struct agent_event {
  enum class kind { online, offline } what;
  std::string device;
  std::string peer;
};

class agent_directory {
 public:
  using listener = std::function<void(const agent_event&)>;

  /// `on_change` (may be empty) is called for every change, from the thread that made it
  /// (any worker): it must be thread-safe.
  explicit agent_directory(listener on_change = {}) : on_change_(std::move(on_change)) {}

  /// Sets the listener; only before the first attach() (the server's startup).
  void set_listener(listener on_change) { on_change_ = std::move(on_change); }

  /// Makes `link` its device's agent, unless the device has one online already: then
  /// nothing changes and that one is returned (one agent per device; the first stays, see
  /// docs/AGENTS.md).
  std::shared_ptr<const agent_link> attach(std::shared_ptr<const agent_link> link);

  /// `link` went away: its device is offline from now, unless a newer agent replaced it.
  void detach(const std::shared_ptr<const agent_link>& link);

  struct lookup {
    std::shared_ptr<const agent_link> online;                        // null: offline
    std::optional<std::chrono::system_clock::time_point> last_seen;  // when it went offline
  };
  lookup find(std::string_view device) const;

  /// The online agents, by device id.
  std::vector<std::shared_ptr<const agent_link>> online() const;

 private:
  struct entry {
    std::shared_ptr<const agent_link> online;
    std::optional<std::chrono::system_clock::time_point> last_seen;
  };
  void notify(const agent_event& e) const {
    if (on_change_) on_change_(e);
  }

  listener on_change_;
  mutable std::mutex mutex_;
  std::map<std::string, entry, std::less<>> devices_;
};

/// "device dev-77 is offline (agent last seen 3 min ago)": why a stream to an agent device
/// whose agent is not connected fails, in words for the client.
std::string offline_message(std::string_view device,
                            std::optional<std::chrono::system_clock::time_point> last_seen,
                            std::chrono::system_clock::time_point now);

}  // namespace tether::server
