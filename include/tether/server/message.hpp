#pragma once
// One message to a device port, sent for the HTTP API (docs/API.md): what the API asks the
// server to deliver and what came of it. The server routes it like a tunnel stream (the
// sender's ACL, the registry, the same upstreams), so direct and agent devices both work.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tether/errc.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/server/config.hpp"

namespace tether::server {

struct message_request {
  mux::target target;
  std::shared_ptr<const credential> sender;  // an API key: its ACL decides, like a token's
  std::string payload;
  // How long to collect the device's reply after the payload went out; 0: do not wait.
  std::chrono::milliseconds wait{0};
  // How long the payload may take to go out when nothing is waited for.
  std::chrono::milliseconds deliver_timeout{5000};
  std::size_t max_reply = 64 * 1024;  // bytes kept of the reply; the rest ends the exchange
};

// Stable words: the API answers with them and the message log stores them.
enum class message_status {
  delivered,       // the payload went out (TCP: written and half-closed; UDP: sent)
  refused,         // the device refused the connection (TCP RST, ICMP port unreachable)
  unreachable,     // no route to the device
  offline,         // the device's agent is not connected
  timed_out,       // the device did not accept the connection or the payload in time
  forbidden,       // the sender's ACL does not cover device:port/proto
  unknown_device,  // no such device in the registry
  failed,          // the server could not try (shutting down, out of resources)
};

const char* to_string(message_status s) noexcept;

/// The status for why a route or a dial failed.
message_status message_status_of(errc why) noexcept;

struct message_outcome {
  message_status status = message_status::failed;
  std::string detail;  // words for the caller; never the device's address
  // What the device sent back while the reply was waited for: one entry for TCP (every
  // byte until it closed or the wait ended), one per datagram for UDP.
  std::vector<std::string> replies;
  bool reply_truncated = false;  // the device sent more than max_reply
};

}  // namespace tether::server
