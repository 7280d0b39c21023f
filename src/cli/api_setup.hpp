#pragma once
// Starts the server's HTTP API (when the config has api_listen) on worker 0's event loop,
// beside the server it sends messages through.

#include <asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "tether/server/config.hpp"
#include "tether/server/server.hpp"

namespace tether::cli {

class api_runtime {
 public:
  virtual ~api_runtime() = default;
  /// "http://127.0.0.1:8080" or "https://...": where clients reach it.
  virtual std::string url() const = 0;
  /// Stops accepting and ends the live feeds; on the API's event loop.
  virtual void close() = 0;
  /// SIGHUP: the API keys of `next` apply from now on; what needs a restart (the address,
  /// the state directory, the bounds) is kept and said so in a line added to `notes`,
  /// before its last line (the summary).
  virtual void reload(const server::api_settings& next, std::vector<std::string>& notes) = 0;
};

/// Null when the config has no api_listen. Throws std::runtime_error (the message log, the
/// certificate) and std::system_error (the address) on failure.
std::unique_ptr<api_runtime> start_api(asio::io_context& io, server::server& srv,
                                       const server::server_config& config);

}  // namespace tether::cli
