#pragma once
// The HTTP server under the API, behind a small interface: requests and responses are plain
// values, the handler is a coroutine, and the HTTP library (RESTinio) stays inside
// src/api/http_server.cpp, the one file that pays for compiling it.
//
// Threads: the listener and every connection live on the io_context given to listen_http
// (one of the server's workers); the handler runs there too.

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tether::api {

struct http_request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded? no: as sent, without the query
  std::string query;   // after '?', as sent
  std::string authorization;
  std::string content_type;
  std::string last_event_id;
  std::string body;
  std::string peer;  // address:port, for logs
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra ones (Retry-After, ...)
};

/// A response that stays open and is written in pieces (Server-Sent Events). The handler
/// gets one through http_request's stream_sink... see http_stream below.
class http_stream {
 public:
  virtual ~http_stream() = default;
  /// Queues `text` and writes it; false once the client has gone. Call on the listener's
  /// io_context only.
  virtual bool write(std::string text) = 0;
  /// True while the client is connected.
  virtual bool open() const = 0;
  /// Ends the response.
  virtual void close() = 0;
};

/// What a handler answers: a whole response, or a stream it feeds later.
struct http_answer {
  http_response response;  // for a stream: the status and content type of its head
  // Set for a streamed response: called once the head is written, with the stream.
  std::function<void(std::shared_ptr<http_stream>)> stream;
};

using http_handler = std::function<asio::awaitable<http_answer>(http_request)>;

struct http_options {
  asio::ip::tcp::endpoint bind;
  // TLS with this certificate chain and key when set; plain HTTP otherwise.
  std::optional<std::pair<std::filesystem::path, std::filesystem::path>> tls;
  std::size_t max_body = 1024 * 1024;  // larger requests are cut off without an answer
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_headers = 64;
  std::size_t max_connections = 1024;
  std::size_t max_connections_per_source = 64;  // from one address; more are closed at accept
  std::chrono::milliseconds request_timeout{30000};
  std::chrono::milliseconds idle_timeout{15000};
};

class http_listener {
 public:
  virtual ~http_listener() = default;
  /// Where it listens (the real port when the options said 0).
  virtual asio::ip::tcp::endpoint local_endpoint() const = 0;
  /// Stops accepting; connections end as their requests do. On the listener's io_context.
  virtual void close() = 0;
};

/// Binds and starts accepting on `io` (which need not run yet). Throws std::system_error
/// naming the address when it cannot bind, std::runtime_error when the TLS files do not load.
std::unique_ptr<http_listener> listen_http(asio::io_context& io, const http_options& options,
                                           http_handler handler);

}  // namespace tether::api
