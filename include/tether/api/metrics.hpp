#pragma once
// The Prometheus text of the server's and the API's counters (GET /metrics). Pure.

#include <string>

#include "tether/server/server.hpp"

namespace tether::api {

struct api_counters;

/// The tunnel server's counters.
std::string server_metrics_text(const server::server_counters& c);

/// The API's counters; `subscribers`: live message feeds open now.
std::string api_metrics_text(const api_counters& c, std::size_t subscribers);

}  // namespace tether::api
