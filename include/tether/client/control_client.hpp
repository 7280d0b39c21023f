#pragma once
// The other end of the control socket, for `tether map`: one request, one reply. Blocking:
// a command that asks once and exits has no event loop to share.

#include <chrono>
#include <filesystem>

#include "tether/client/control_protocol.hpp"

namespace tether::client {

/// Connects to `socket`, sends `request` and reads its reply, all within `timeout`.
/// A refusal by the client comes back as a reply with a failure; throws std::runtime_error
/// in plain words when the socket cannot be reached, the time runs out, or the reply is not
/// a reply (or longer than max_control_reply).
control_reply ask_control(const std::filesystem::path& socket, const control_request& request,
                          std::chrono::milliseconds timeout);

}  // namespace tether::client
