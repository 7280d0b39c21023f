#pragma once
// Delivers one API message through the router: the same route, upstream and relay as a
// tunnel stream, with a message_channel in place of the client's stream.

#include <asio/awaitable.hpp>

#include "tether/server/message.hpp"
#include "tether/server/router.hpp"

namespace tether::server {

/// Routes, connects and relays `request` on the caller's executor (the router's worker),
/// then waits for the payload to go out and, if asked, for the reply. Never throws.
asio::awaitable<message_outcome> deliver_message(const router& routes, message_request request);

}  // namespace tether::server
