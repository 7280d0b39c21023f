#pragma once
// The flags every client of the HTTP API takes (`send`, `webhook`, `messages`): where the
// API is, its CA, and the key (from a file or TETHER_API_KEY, never the command line).

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "tether/api/client.hpp"

namespace tether::cli {

struct api_flags {
  std::string url;  // --api, or TETHER_API
  std::string key_file;
  std::string ca_file;
};

void add_api_flags(CLI::App& cmd, api_flags& f);

/// The client options, or nullopt after reporting what is missing (a usage error).
std::optional<api::client_options> api_client_options(const api_flags& f, bool json);

/// The exit code and a message for an answer that is not 2xx (or no answer).
int report_api_failure(const api::client_response& r, bool json);

}  // namespace tether::cli
