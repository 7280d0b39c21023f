#pragma once
// The HTTP API of the server (docs/API.md): API keys, messages to device ports and their
// replies in the message log, webhooks, the live feed, /metrics and /healthz. It answers
// http_requests; the transport is http.hpp's, and the delivery of a message is the server's
// (server::server::deliver), given as a function so tests can stand in for it.
//
// Threads: everything here runs on the one io_context the API was given; deliveries run on
// the server's workers and come back to it.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tether/api/http.hpp"
#include "tether/api/message_log.hpp"
#include "tether/server/config.hpp"
#include "tether/server/message.hpp"

namespace tether::api {

using deliver_function =
    std::function<asio::awaitable<server::message_outcome>(server::message_request)>;

/// Counts /metrics reports; kept here, on the API's thread.
struct api_counters {
  std::map<std::string, std::uint64_t> messages_by_status;  // bounded: message_status words
  std::map<std::string, std::uint64_t> webhooks_by_status;  // "delivered"... and "rate_limited"
  std::map<int, std::uint64_t> responses_by_code;           // HTTP status codes sent
  std::uint64_t reply_bytes = 0;
};

/// What /metrics reports of the rest of the server; called on the API's thread.
using metrics_source = std::function<std::string()>;

/// What the server says of its devices and sessions (server::server::devices_json and
/// live_sessions_json); called on the API's thread, so they must be thread-safe.
struct status_source {
  std::function<std::string(const server::acl&)> devices;  // the catalog with activity
  std::function<std::string(std::size_t max)> sessions;    // the live sessions, at most max
  std::function<bool(const std::string&)> has_device;      // in the registry in force
};

class service : public std::enable_shared_from_this<service> {
 public:
  /// Opens the message log in settings.state_dir (throws std::runtime_error when it
  /// cannot). `deliver_timeout`: how long a payload may take to go out.
  service(asio::any_io_executor ex, server::api_settings settings, deliver_function deliver,
          std::chrono::milliseconds deliver_timeout);
  ~service();

  /// Answers one request. Never throws for what a client sends.
  asio::awaitable<http_answer> handle(http_request req);

  /// Adds the server's own counters to /metrics.
  void set_metrics_source(metrics_source source) { server_metrics_ = std::move(source); }

  /// Serves GET /api/v1/devices and /api/v1/sessions from these (404 without).
  void set_status_source(status_source source) { status_ = std::move(source); }

  /// From now on requests are checked against these keys (a reload).
  void set_keys(const std::vector<server::credential>& keys);

  /// Ends the live feeds (a stopping server).
  void close();

  const api_counters& counters() const noexcept { return counters_; }

 private:
  struct subscriber;
  struct session_feed;
  struct webhook_bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at;
  };

  std::shared_ptr<const server::credential> authenticate(const http_request& req) const;
  asio::awaitable<http_answer> route(http_request& req);
  asio::awaitable<http_answer> post_device_message(const http_request& req,
                                                   std::shared_ptr<const server::credential> key,
                                                   const std::string& device);
  asio::awaitable<http_answer> post_messages(const http_request& req,
                                             std::shared_ptr<const server::credential> key);
  http_answer get_messages(const http_request& req, const server::credential& key);
  http_answer stream_messages(const http_request& req,
                              std::shared_ptr<const server::credential> key);
  http_answer create_webhook(const http_request& req, const server::credential& key,
                             const std::string& device);
  http_answer list_webhooks(const server::credential& key, const std::string& device);
  http_answer revoke_webhook(const server::credential& key, const std::string& device,
                             const std::string& id);
  asio::awaitable<http_answer> post_webhook(const http_request& req, const std::string& token);
  http_answer metrics() const;
  http_answer get_devices(const server::credential& key) const;
  http_answer get_sessions(const server::credential& key) const;
  http_answer stream_sessions(std::shared_ptr<const server::credential> key);
  void tick(const std::shared_ptr<session_feed>& feed);  // the next update of a sessions feed
  void drop(const std::shared_ptr<session_feed>& feed);
  // Ends the sessions feeds, all of them or those of keys no longer accepted.
  void drop_session_feeds(bool all);

  // Sends one message, stores it with its replies and answers (404/403 when it reached no
  // device, which are not stored).
  asio::awaitable<http_answer> deliver_and_keep(server::message_request request,
                                                std::vector<std::string> topics,
                                                std::string sender);
  // Sends to each target at once; results in order.
  asio::awaitable<std::vector<server::message_outcome>> deliver_all(
      std::vector<server::message_request> requests);
  // A 503 when `n` more deliveries would pass max_messages_in_flight: each holds a stream of
  // the server, from the budget the tunnels use too.
  std::optional<http_answer> refuse_if_busy(std::size_t n) const;
  // Stores a delivered message and its replies; the stored rows, or why not.
  result<std::vector<stored_message>> keep(const server::message_request& request,
                                           const server::message_outcome& outcome,
                                           const std::vector<std::string>& topics,
                                           const std::string& sender);
  void publish(const std::vector<stored_message>& rows);
  void beat(const std::shared_ptr<subscriber>& sub);  // the next heartbeat of a live feed
  void drop(const std::shared_ptr<subscriber>& sub);
  void drop_feeds_of_old_keys();
  bool rate_limited(std::int64_t webhook, std::chrono::milliseconds& retry_after);

  asio::any_io_executor executor_;
  server::api_settings settings_;
  std::vector<std::shared_ptr<const server::credential>> keys_;
  deliver_function deliver_;
  std::chrono::milliseconds deliver_timeout_;
  message_log log_;
  api_counters counters_;
  metrics_source server_metrics_;
  status_source status_;
  std::vector<std::shared_ptr<session_feed>> session_feeds_;
  std::vector<std::shared_ptr<subscriber>> subscribers_;
  std::map<std::int64_t, webhook_bucket> buckets_;
  std::size_t deliveries_in_flight_ = 0;
  bool closed_ = false;
};

}  // namespace tether::api
