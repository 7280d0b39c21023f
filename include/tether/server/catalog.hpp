#pragma once
// The device catalog (docs/PROTOCOL.md, "The device catalog"): what a credential may reach,
// as the JSON document a catalog stream carries. Built from the registry and the ACL alone,
// so it names ids and ports, never a device's address.

#include <memory>
#include <string>

#include "tether/relay/buffer_pool.hpp"
#include "tether/server/acl.hpp"
#include "tether/server/agent_directory.hpp"
#include "tether/server/registry.hpp"
#include "tether/server/session_directory.hpp"
#include "tether/server/upstream.hpp"

namespace tether::server {

/// `{"devices": [{"id", "kind", "ports": [{"min", "max", "proto"}]}]}` for each device that
/// at least one rule of `allowed` covers, in id order; a device's ports are the port ranges
/// of those rules, in rule order, without repeats. `kind` is "direct" or "agent"; an agent
/// device also has `online` (whether its agent is connected, per `agents`; false without).
///
/// With `activity` (the HTTP API's GET /api/v1/devices, docs/API.md), each device also has
/// `reachable` (an agent device: its agent is online; a direct one: its last dial reached
/// it, connected or refused by the device, null before the first), `last_dial` ({ok, error, message, at_ms}, direct devices once
/// dialed), `streams_open`, `streams_opened`, `bytes_to_device` and `bytes_from_device`.
std::string catalog_json(const registry& devices, const acl& allowed,
                         const agent_directory* agents = nullptr,
                         const device_activity* activity = nullptr);

/// An upstream that answers a catalog stream with `document`, then ends it.
std::unique_ptr<upstream> make_catalog_upstream(std::string document);

}  // namespace tether::server
