#pragma once
// A stream on the session an agent device keeps open: the server opens it toward the
// agent, which dials the port on the device (docs/AGENTS.md). The agent's session may live
// on another worker than the client's: everything done to it, and to the stream opened on
// it, runs on the agent's executor; the client's stream stays on its own.

#include <asio/any_io_executor.hpp>
#include <memory>

#include "tether/mux/tunnel.hpp"
#include "tether/server/agent_directory.hpp"
#include "tether/server/upstream.hpp"

namespace tether::server {

class agent_upstream final : public upstream {
 public:
  /// `own`: the executor of the client's session, where connect() and relay() are called.
  agent_upstream(asio::any_io_executor own, std::shared_ptr<const agent_link> link,
                 mux::target target);
  /// The agent's stream is destroyed (reset, if it is not done) on the agent's executor.
  ~agent_upstream() override;

  asio::awaitable<std::optional<refusal>> connect() override;
  asio::awaitable<relay_outcome> relay(mux::channel& ch) override;
  /// Resets the agent's stream (on the agent's executor); the relay then ends on its own.
  void abort() override;

 private:
  asio::any_io_executor own_;
  std::shared_ptr<const agent_link> link_;
  mux::target target_;
  std::unique_ptr<mux::channel> stream_;  // on the agent's session; owned by its executor
};

}  // namespace tether::server
