#include "tether/api/service.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>

#include "answers.hpp"
#include "web.hpp"
#include "tether/api/metrics.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/printable.hpp"
#include "tether/transport/ssh_util.hpp"

namespace tether::api {
namespace {

// "/api/v1/devices/dev-42/messages" split at '/', without the empty first part.
std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    if (path.front() == '/') path.remove_prefix(1);
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
  }
  return out;
}

// The key of "Bearer KEY", or of "Basic base64(user:KEY)" (the password is the key).
std::string presented_key(std::string_view header) {
  auto starts = [&](std::string_view scheme) {
    return header.size() > scheme.size() &&
           std::equal(scheme.begin(), scheme.end(), header.begin(),
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); });
  };
  if (starts("Bearer ")) return std::string(header.substr(7));
  if (starts("Basic ")) {
    const auto decoded = transport::base64_decode(header.substr(6));
    if (!decoded) return {};
    const auto colon = decoded->find(':');
    return colon == std::string::npos ? std::string{} : decoded->substr(colon + 1);
  }
  return {};
}

}  // namespace

service::service(asio::any_io_executor ex, server::api_settings settings,
                 deliver_function deliver, std::chrono::milliseconds deliver_timeout)
    : executor_(std::move(ex)),
      settings_(std::move(settings)),
      deliver_(std::move(deliver)),
      deliver_timeout_(deliver_timeout),
      log_(settings_.state_dir / "messages.db",
           retention{settings_.retention_age, settings_.retention_count}) {
  set_keys(settings_.keys);
}

// A request in flight keeps the key it was checked with; a live feed of a key that is gone
// (or whose hash changed) ends.
void service::set_keys(const std::vector<server::credential>& keys) {
  keys_.clear();
  for (const auto& k : keys) keys_.push_back(std::make_shared<const server::credential>(k));
  drop_feeds_of_old_keys();
}

service::~service() = default;

// Compares against every key so the time taken does not say which one matched.
std::shared_ptr<const server::credential> service::authenticate(const http_request& req) const {
  const auto key = presented_key(req.authorization);
  if (key.empty()) return nullptr;
  std::shared_ptr<const server::credential> found;
  for (const auto& k : keys_)
    if (server::token_matches(key, k->token_sha256) && !found) found = k;
  return found;
}

asio::awaitable<http_answer> service::handle(http_request req) {
  auto answer = co_await route(req);
  ++counters_.responses_by_code[answer.response.status];
  // Every answer is taken as the type it says: a device's bytes in a JSON answer are never
  // sniffed into a page.
  auto& h = answer.response.headers;
  if (std::none_of(h.begin(), h.end(), [](const auto& f) { return f.first == "X-Content-Type-Options"; }))
    h.emplace_back("X-Content-Type-Options", "nosniff");
  co_return answer;
}

asio::awaitable<http_answer> service::route(http_request& req) {
  const auto parts = segments(req.path);
  const auto& m = req.method;
  if (parts.size() == 1 && parts[0] == "healthz" && m == "GET")
    co_return json_answer(200, {{"status", "ok"}});

  if (parts.size() == 1 && parts[0] == "metrics" && m == "GET") co_return metrics();
  // The dashboard's files: public, like any page that asks for a key before it shows data.
  if (m == "GET") {
    if (auto page = web_answer(req.path)) co_return std::move(*page);
  }
  // /webhooks/{token}: the token is the authentication.
  if (parts.size() == 2 && parts[0] == "webhooks") {
    if (m != "POST") co_return error_answer(405, "method_not_allowed", "use POST");
    co_return co_await post_webhook(req, std::string(parts[1]));
  }

  const bool api = parts.size() >= 2 && parts[0] == "api" && parts[1] == "v1";
  if (!api) co_return error_answer(404, "not_found", "no such endpoint");

  auto key = authenticate(req);
  if (!key) {
    auto a = error_answer(401, "unauthorized",
                          "a valid API key is required (Authorization: Bearer KEY)");
    a.response.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"tether\"");
    co_return a;
  }
  // /api/v1/messages
  if (parts.size() == 3 && parts[2] == "messages") {
    if (m == "POST") co_return co_await post_messages(req, key);
    if (m == "GET") co_return get_messages(req, *key);
    co_return error_answer(405, "method_not_allowed", "use GET or POST");
  }
  if (parts.size() == 4 && parts[2] == "messages" && parts[3] == "stream") {
    if (m == "GET") co_return stream_messages(req, key);
    co_return error_answer(405, "method_not_allowed", "use GET");
  }
  if (parts.size() == 3 && parts[2] == "devices") {
    if (m == "GET") co_return get_devices(*key);
    co_return error_answer(405, "method_not_allowed", "use GET");
  }
  if (parts.size() == 3 && parts[2] == "sessions") {
    if (m == "GET") co_return get_sessions(*key);
    co_return error_answer(405, "method_not_allowed", "use GET");
  }
  if (parts.size() == 4 && parts[2] == "sessions" && parts[3] == "stream") {
    if (m == "GET") co_return stream_sessions(key);
    co_return error_answer(405, "method_not_allowed", "use GET");
  }
  // /api/v1/devices/{id}/...
  if (parts.size() >= 5 && parts[2] == "devices") {
    const std::string device(parts[3]);
    if (!server::is_valid_device_id(device))
      co_return error_answer(400, "bad_request", "a device id is 1-64 of A-Z a-z 0-9 . _ -");
    if (parts.size() == 5 && parts[4] == "messages") {
      if (m == "POST") co_return co_await post_device_message(req, key, device);
      co_return error_answer(405, "method_not_allowed", "use POST");
    }
    if (parts.size() == 5 && parts[4] == "webhooks") {
      if (m == "POST") co_return create_webhook(req, *key, device);
      if (m == "GET") co_return list_webhooks(*key, device);
      co_return error_answer(405, "method_not_allowed", "use GET or POST");
    }
    if (parts.size() == 6 && parts[4] == "webhooks") {
      if (m == "DELETE") co_return revoke_webhook(*key, device, std::string(parts[5]));
      co_return error_answer(405, "method_not_allowed", "use DELETE");
    }
  }
  co_return error_answer(404, "not_found", "no such endpoint");
}

asio::awaitable<std::vector<server::message_outcome>> service::deliver_all(
    std::vector<server::message_request> requests) {
  struct gathering {
    std::vector<server::message_outcome> outcomes;
    std::size_t left = 0;
    mux::async_signal done;
  };
  auto g = std::make_shared<gathering>();
  g->outcomes.resize(requests.size());
  g->left = requests.size();
  deliveries_in_flight_ += requests.size();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    asio::co_spawn(executor_, deliver_(std::move(requests[i])),
                   [g, i](std::exception_ptr e, server::message_outcome o) {
                     if (e) o.status = server::message_status::failed;
                     g->outcomes[i] = std::move(o);
                     if (--g->left == 0) g->done.notify();
                   });
  }
  while (g->left > 0) co_await g->done.wait();
  deliveries_in_flight_ -= g->outcomes.size();
  co_return std::move(g->outcomes);
}

std::optional<http_answer> service::refuse_if_busy(std::size_t n) const {
  if (deliveries_in_flight_ + n <= settings_.max_messages_in_flight) return std::nullopt;
  auto a = error_answer(503, "busy",
                        std::to_string(deliveries_in_flight_) +
                            " messages are being delivered (max_messages_in_flight " +
                            std::to_string(settings_.max_messages_in_flight) +
                            "); try again shortly");
  a.response.headers.emplace_back("Retry-After", "1");
  return a;
}

result<std::vector<stored_message>> service::keep(const server::message_request& request,
                                                  const server::message_outcome& outcome,
                                                  const std::vector<std::string>& topics,
                                                  const std::string& sender) {
  stored_message m;
  m.device = request.target.device;
  m.port = request.target.port;
  m.protocol = mux::protocol_name(request.target.proto);
  m.direction = "to_device";
  m.status = server::to_string(outcome.status);
  m.sender = sender;
  m.data = request.payload;
  m.topics = topics;
  std::vector<stored_message> replies;
  for (const auto& r : outcome.replies) {
    stored_message reply;
    reply.device = m.device;
    reply.port = m.port;
    reply.protocol = m.protocol;
    reply.direction = "from_device";
    reply.sender = m.device;
    reply.data = r;
    reply.topics = topics;
    counters_.reply_bytes += r.size();
    replies.push_back(std::move(reply));
  }
  auto rows = log_.store(std::move(m), std::move(replies));
  if (rows) publish(*rows);
  return rows;
}

http_answer service::metrics() const {
  http_answer a;
  a.response.content_type = "text/plain; version=0.0.4; charset=utf-8";
  a.response.body = api_metrics_text(counters_, subscribers_.size());
  if (server_metrics_) a.response.body += server_metrics_();
  return a;
}

}  // namespace tether::api
