#pragma once
// The server's config file (TOML), validated once into typed values. Every problem is
// reported with the file, the line (when known) and the key, and unknown keys are errors:
// a typo must never silently fall back to a default. docs/CONFIG.md is the reference.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tether/config_error.hpp"
#include "tether/mux/session.hpp"
#include "tether/result.hpp"
#include "tether/server/acl.hpp"
#include "tether/server/registry.hpp"
#include "tether/server/token.hpp"

namespace tether::server {

using tether::config_error;

struct endpoint {
  std::string host;  // IPv6 literals without brackets ("::1")
  std::uint16_t port = 0;

  /// "127.0.0.1:7443", "[::1]:7443".
  std::string text() const;
};

/// Parses "host:port" or "[v6]:port"; port 0 (let the system pick) is allowed. The host is
/// a name, an IPv4 literal or a bracketed IPv6 literal. Pure: resolves nothing.
result<endpoint> parse_endpoint(std::string_view text);

struct credential {
  std::string name;            // for logs: which credential opened a session
  sha256_digest token_sha256;  // the token itself is never stored
  acl allow;
  // An agent credential: the device id (an agent device) whose agent it authenticates. It
  // can speak for that device only, and opens no streams (its ACL stays empty).
  std::string agent_for;
  // An API key (docs/CONFIG.md, [[api_key]]): may list every live session, with its
  // credential's name and peer address (GET /api/v1/sessions).
  bool see_sessions = false;
};

/// What one peer, one source address or one credential may make the server hold. Each
/// refusal is logged with the limit's name and counted (docs/CONFIG.md).
struct server_limits {
  std::size_t max_queued_bytes = 4 * 1024 * 1024;  // waiting to be written toward one peer
  std::uint32_t max_pending_handshakes = 1024;      // accepted, not yet authenticated
  std::uint32_t max_pending_handshakes_per_source = 64;
  std::uint32_t max_sessions_per_credential = 256;
  std::uint32_t max_sessions_per_source = 256;
  std::uint32_t max_streams_per_credential = 20000;
  std::uint32_t max_streams = 0;  // server-wide; 0: what the open-files limit leaves room for
  std::uint32_t max_pending_opens_per_session = 256;  // streams whose device is being dialed
  std::uint32_t max_auth_failures_per_source = 10;    // bad tokens within auth_failure_window
  std::chrono::milliseconds auth_failure_window{60000};
};

/// The HTTP API (docs/API.md, docs/CONFIG.md): off unless `api_listen` is set.
struct api_settings {
  std::optional<endpoint> listen;  // api_listen
  bool tls = true;                 // false only on a loopback address
  std::filesystem::path state_dir;  // the message log lives here (required with the API)
  std::size_t max_payload = 64 * 1024;          // decoded bytes of one message; more: 413
  std::chrono::milliseconds max_wait{30000};    // the most wait_for_reply_ms may ask
  std::size_t max_reply = 64 * 1024;            // bytes kept of one reply
  std::uint32_t max_devices_per_message = 100;  // deviceids of POST /api/v1/messages
  std::uint32_t max_messages_in_flight = 1000;  // being delivered at once; more: 503
  std::size_t max_header_bytes = 8 * 1024;      // one header field, and the URL
  std::uint32_t max_headers = 64;
  std::chrono::milliseconds request_timeout{40000};  // reading a request and answering it
  std::chrono::milliseconds idle_timeout{15000};     // a kept-alive connection between requests
  std::uint32_t max_connections = 1024;
  std::uint32_t max_connections_per_source = 64;
  std::chrono::hours retention_age{24 * 30};  // messages older than this are deleted
  std::uint64_t retention_count = 1'000'000;  // and the oldest past this many
  std::uint32_t webhook_rate_per_minute = 600;  // each webhook's sustained rate; more: 429
  std::uint32_t webhook_burst = 20;             // and the burst it may send at once
  std::vector<credential> keys;               // [[api_key]]: name, token_sha256, allow
};

struct server_config {
  endpoint listen{"127.0.0.1", 7443};
  std::filesystem::path cert;  // PEM certificate chain
  std::filesystem::path key;   // PEM private key
  std::vector<credential> credentials;
  std::vector<device> devices;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds grace_period{10000};
  std::chrono::milliseconds keepalive{15000};
  std::chrono::milliseconds udp_idle_timeout{60000};  // a UDP flow with no datagram either way
  std::uint32_t stream_window = 2 * 1024 * 1024;
  std::uint32_t session_window = 16 * 1024 * 1024;
  // Stream windows grow up to this while a path needs it (docs/CONFIG.md); the session's
  // up to twice it. Without the key: 16 MiB, or stream_window if that is larger.
  std::uint32_t max_stream_window = 16 * 1024 * 1024;
  std::uint32_t max_streams_per_session = 10000;
  // Event-loop threads the sessions are spread over; 0: one per CPU. Read at startup only.
  std::uint32_t workers = 0;
  server_limits limits;
  api_settings api;
};

/// Bounds enforced by the parser (also listed in docs/CONFIG.md); the windows' are the
/// session's own.
inline constexpr std::uint32_t min_window = mux::min_window;
inline constexpr std::uint32_t max_window = mux::max_window;
inline constexpr std::uint32_t max_streams_limit = 1'000'000;
inline constexpr std::uint32_t max_workers = 1024;

/// Parses and validates a config held in memory. `source` names it in messages, and
/// relative cert/key paths are resolved against its directory (lexically: the files need
/// not exist). Throws config_error.
server_config parse_server_config(std::string_view toml_text, const std::filesystem::path& source);

/// Reads `path` and parses it as above, then checks that the cert and key files exist.
/// Throws config_error.
server_config load_server_config(const std::filesystem::path& path);

}  // namespace tether::server
