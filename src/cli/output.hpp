#pragma once
// How the CLI talks to its user: events on stdout (one line each, text or JSON), logs on
// stderr (spdlog).

#include <nlohmann/json.hpp>
#include <functional>
#include <string>
#include <string_view>

#include "tether/client/events.hpp"

namespace tether::cli {

/// Why `level` is not a log level spdlog knows, or "" when it is one. The commands check
/// --log-level with it as the command line is read, so that a wrong level is a usage error.
std::string log_level_problem(const std::string& level);

/// Sets up spdlog on stderr at `level` (trace, debug, info, warn, error, off).
/// Throws std::invalid_argument naming a level it does not know (log_level_problem).
void setup_logging(const std::string& level);

/// One event line on stdout, flushed at once (scripts read it through pipes). JSON events
/// get a "time" (UTC, ISO 8601 with milliseconds) after their "event" name.
void print_event(bool json, const nlohmann::ordered_json& event, const std::string& text);

/// Sends events to stderr instead of stdout: `connect -- CMD` leaves stdout to the command.
void print_events_on_stderr();

/// A fatal error: "error: MESSAGE" on stderr and, with `json`, an event
/// {"event":"error","code":CODE,"reason":REASON,"message":MESSAGE} for scripts. `code` is
/// the exit code the process is about to return.
void report_error(bool json, int code, std::string_view reason, const std::string& message);

/// Now as "2026-11-28T07:10:45.465Z".
std::string utc_timestamp();

/// Prints the events of one proxy as text or JSON lines. `server` ("host:port") names it
/// where an event would not say which server it is about.
class event_printer final : public client::event_sink {
 public:
  event_printer(bool json, std::string server) : json_(json), server_(std::move(server)) {}
  void listening(const client::mapping& m, const std::string& name,
                 const std::string& local) override;
  void connected(const std::string& server) override;
  void disconnected(const std::string& reason, std::chrono::milliseconds retry_in) override;
  /// A `disconnected` event with reason "going away" and `continuing_streams`.
  void going_away(std::size_t continuing) override;
  void stream_error(const client::mapping& m, const std::string& local, errc reason,
                    const std::string& message) override;

  /// "connecting to SERVER": printed before the first dial, which may take a while.
  void connecting();
  /// Prints `ready` with the next `connected`, or now if the session is up (once every
  /// listener is bound and a session is established, connections go straight through),
  /// then calls `then` once. From then on every `connected` (a reconnection) is followed by
  /// `ready` again: the tunnel is usable once more. `mappings` counts the mappings at the
  /// time (`tether map` and reloads change them).
  void ready_when_connected(std::function<std::size_t()> mappings, std::function<void()> then = {});

 private:
  void ready();

  bool json_;
  std::string server_;
  bool connected_ = false;
  std::function<std::size_t()> mappings_;  // set by ready_when_connected
  bool ready_pending_ = false;
  std::function<void()> on_ready_;
};

}  // namespace tether::cli
