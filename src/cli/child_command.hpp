#pragma once
// `tether connect ... -- CMD ARGS...`: the command that runs once the tunnel is ready, with
// the mappings' local addresses in its environment; its exit code becomes tether's.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

#include "tether/client/mapping_status.hpp"

namespace tether::cli {

/// TETHER_ADDR and TETHER_PORT (the first mapping's local address and port), and
/// TETHER_ADDR_<NAME> and TETHER_PORT_<NAME> for each mapping: its name in capitals with
/// every other character than A-Z and 0-9 made '_' ("dev-42:22" gives TETHER_PORT_DEV_42_22).
std::vector<std::pair<std::string, std::string>> mapping_environment(
    const std::vector<client::mapping_status>& mappings);

class child_command {
 public:
  child_command(asio::any_io_executor ex, std::vector<std::string> argv);
  ~child_command();
  child_command(const child_command&) = delete;
  child_command& operator=(const child_command&) = delete;

  /// Starts the command (found on PATH, as a shell would) with `env` added to this
  /// process's environment, sharing stdin, stdout and stderr. Throws std::system_error
  /// naming the command when it cannot be started. The command gets SIGTERM when tether
  /// ends in any way, SIGKILL included (PR_SET_PDEATHSIG). The kernel sends it when the
  /// thread that started the command ends: call this from the main thread (std::logic_error
  /// otherwise).
  void start(const std::vector<std::pair<std::string, std::string>>& env);

  /// Waits for the command to end: its exit code, or 128 + N when signal N ended it.
  asio::awaitable<int> wait();

  /// Sends `sig` to the command while it runs.
  void signal(int sig);

  bool running() const noexcept { return pid_ > 0 && !ended_; }
  const std::string& name() const noexcept { return argv_.front(); }

 private:
  asio::any_io_executor ex_;
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  bool ended_ = false;
  asio::posix::stream_descriptor exited_;  // a pidfd: readable once the command has ended
};

}  // namespace tether::cli
