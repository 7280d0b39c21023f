#pragma once
// route(target, credential) → upstream: the one place that decides where a stream goes.
// It checks the credential's ACL and the registry and picks the upstream for the protocol;
// the server applies its limits and then connects and relays whatever it was given.

#include <asio/any_io_executor.hpp>
#include <chrono>
#include <memory>

#include "tether/mux/tunnel.hpp"
#include "tether/relay/buffer_pool.hpp"
#include "tether/result.hpp"
#include "tether/server/agent_directory.hpp"
#include "tether/server/config.hpp"
#include "tether/server/registry.hpp"
#include "tether/server/session_directory.hpp"
#include "tether/server/upstream.hpp"

namespace tether::server {

struct route_settings {
  std::chrono::milliseconds connect_timeout{5000};  // dialing a TCP device port
  std::chrono::milliseconds udp_idle{60000};        // a UDP flow with no datagram either way
};

class router {
 public:
  /// `pool` must outlive the router and every upstream it makes.
  router(asio::any_io_executor ex, std::shared_ptr<const registry> devices,
         relay::buffer_pool& pool, route_settings settings);

  /// From now on, streams are routed with these (a reload). Upstreams already made keep
  /// what they were given.
  void update(std::shared_ptr<const registry> devices, route_settings settings);

  /// Where agent devices (device::agent) find their agents; until it is given, streams
  /// to them fail as offline. `agents` must outlive the router.
  void use_agents(const agent_directory& agents) { agents_ = &agents; }

  /// Where the outcome of each dial to a direct device's TCP port is recorded (a device's
  /// reachability, docs/API.md). `activity` must outlive the router and its upstreams.
  void use_activity(device_activity& activity) { activity_ = &activity; }

  /// The upstream for `t` on behalf of `cred`, or why not: errc::forbidden (the ACL) or
  /// errc::unknown_device, with words for the client.
  result<std::unique_ptr<upstream>> route(const mux::target& t, const credential& cred) const;

  /// True if `id` is an agent device: reached through its agent's session, so a route to it
  /// that fails as unreachable means its agent is offline (an API message's `offline`).
  bool is_agent_device(std::string_view id) const;

 private:
  asio::any_io_executor executor_;
  std::shared_ptr<const registry> devices_;
  relay::buffer_pool& pool_;
  route_settings settings_;
  const agent_directory* agents_ = nullptr;
  device_activity* activity_ = nullptr;

  // A stream to a device whose agent dials out: a stream on the agent's session, or
  // errc::unreachable at once when the agent is offline.
  result<std::unique_ptr<upstream>> route_to_agent(const mux::target& t) const;
};

}  // namespace tether::server
