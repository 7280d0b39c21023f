#pragma once
// A client of the HTTP API for the CLI (`tether send`, `webhook`, `messages`), on libcurl:
// HTTPS with the system's CAs or a given CA file, the key as a bearer token. Blocking; one
// request at a time.

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

namespace tether::api {

struct client_options {
  std::string url;      // "https://host:8443" (no path)
  std::string key;      // the API key; empty: none sent
  std::string ca_file;  // empty: the system's CAs
  std::chrono::milliseconds timeout{60000};
};

struct client_response {
  long status = 0;    // HTTP status; 0 when no answer came
  std::string body;   // the answer's body
  std::string error;  // why no answer came (connection refused, certificate...)
};

/// One request; `body` is sent when not empty. Never throws.
client_response call(const client_options& o, std::string_view method, std::string_view path,
                     std::string_view body = {},
                     std::string_view content_type = "application/json");

/// GET `path` and hand the body to `on_data` piece by piece as it arrives, until the server
/// ends it, `on_data` returns false, or it fails. No overall timeout (a live feed).
client_response follow(const client_options& o, std::string_view path,
                       const std::function<bool(std::string_view)>& on_data);

}  // namespace tether::api
