// Webhooks: an unguessable URL per device port that sends what is posted to it, with no
// other authentication. The token is shown once at creation and stored only as its hash.
#include <spdlog/spdlog.h>

#include <cmath>

#include "answers.hpp"
#include "tether/api/service.hpp"
#include "tether/api/text.hpp"
#include "tether/server/token.hpp"

namespace tether::api {
namespace {

using nlohmann::json;

json webhook_json(const stored_webhook& w) {
  return json{{"id", w.id},
              {"device", w.device},
              {"port", w.port},
              {"protocol", w.protocol},
              {"created_by", w.created_by},
              {"created_ms", w.created_ms}};
}

// A form, unless it is a JSON object: `curl -d '{...}'` labels JSON as a form.
bool is_form(const http_request& req) {
  const auto first = req.body.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && req.body[first] == '{') return false;
  return req.content_type.rfind("application/x-www-form-urlencoded", 0) == 0;
}

}  // namespace

http_answer service::create_webhook(const http_request& req, const server::credential& key,
                                    const std::string& device) {
  const json j = json::parse(req.body, nullptr, false);
  if (!j.is_object()) return error_answer(400, "bad_request", "the body must be a JSON object");
  stored_webhook w;
  w.device = device;
  w.protocol = "tcp";
  for (const auto& [name, value] : j.items()) {
    if (name == "port" && value.is_number_integer() && value.get<std::int64_t>() >= 1 &&
        value.get<std::int64_t>() <= 65535) {
      w.port = static_cast<std::uint16_t>(value.get<std::int64_t>());
    } else if (name == "protocol" && value.is_string() &&
               mux::protocol_from_name(value.get_ref<const std::string&>())) {
      w.protocol = value.get<std::string>();
    } else {
      return error_answer(400, "bad_request",
                          "a webhook is {\"port\": 1-65535, \"protocol\": \"tcp\" or \"udp\"}");
    }
  }
  if (w.port == 0) return error_answer(400, "bad_request", "\"port\" is missing");
  const auto proto = mux::protocol_from_name(w.protocol).value_or(mux::protocol::tcp);
  if (!key.allow.allows(device, w.port, proto))
    return error_answer(403, "forbidden", "this API key may not reach " + device + ":" +
                                              std::to_string(w.port) + "/" + w.protocol);
  // After the ACL check: a key learns only whether the devices it may reach exist.
  if (status_.has_device && !status_.has_device(device))
    return error_answer(404, "unknown_device", "there is no device " + device);
  w.created_by = key.name;
  const auto token = server::generate_token();  // 256 random bits
  auto stored = log_.add_webhook(w, server::sha256(token));
  if (!stored) {
    spdlog::error("{}", stored.message());
    return error_answer(503, "not_stored", "the webhook could not be stored");
  }
  spdlog::info("webhook {} for {}:{}/{} created by '{}'", stored->id, device, w.port, w.protocol,
               key.name);
  auto body = webhook_json(*stored);
  body["token"] = token;
  body["url"] = "/webhooks/" + token;
  return json_answer(201, body);
}

http_answer service::list_webhooks(const server::credential& key, const std::string& device) {
  auto hooks = log_.webhooks(device);
  if (!hooks) return error_answer(503, "not_available", "the webhooks could not be read");
  json list = json::array();
  for (const auto& w : *hooks) {
    const auto proto = mux::protocol_from_name(w.protocol).value_or(mux::protocol::tcp);
    if (key.allow.allows(w.device, w.port, proto)) list.push_back(webhook_json(w));
  }
  return json_answer(200, json{{"webhooks", std::move(list)}});
}

http_answer service::revoke_webhook(const server::credential& key, const std::string& device,
                                    const std::string& id) {
  std::int64_t n = 0;
  try {
    std::size_t used = 0;
    n = std::stoll(id, &used);
    if (used != id.size()) n = 0;
  } catch (const std::exception&) {
  }
  auto hooks = log_.webhooks(device);
  if (!hooks) return error_answer(503, "not_available", "the webhooks could not be read");
  for (const auto& w : *hooks) {
    if (w.id != n) continue;
    const auto proto = mux::protocol_from_name(w.protocol).value_or(mux::protocol::tcp);
    if (!key.allow.allows(w.device, w.port, proto)) break;  // not this key's to see
    auto revoked = log_.revoke_webhook(device, n);
    if (!revoked) return error_answer(503, "not_stored", "the webhook could not be revoked");
    spdlog::info("webhook {} for {} revoked by '{}'", n, device, key.name);
    return json_answer(200, json{{"revoked", n}});
  }
  return error_answer(404, "not_found", "no such webhook");
}

// A token bucket per webhook: `webhook_burst` at once, then webhook_rate_per_minute.
bool service::rate_limited(std::int64_t webhook, std::chrono::milliseconds& retry_after) {
  const double per_second = settings_.webhook_rate_per_minute / 60.0;
  const double burst = settings_.webhook_burst;
  const auto now = std::chrono::steady_clock::now();
  auto [it, fresh] = buckets_.try_emplace(webhook, webhook_bucket{burst, now});
  auto& b = it->second;
  if (!fresh) {
    const double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.tokens = std::min(burst, b.tokens + elapsed * per_second);
    b.at = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return false;
  }
  retry_after = std::chrono::milliseconds(
      static_cast<std::int64_t>(std::ceil((1.0 - b.tokens) / per_second * 1000.0)));
  return true;
}

asio::awaitable<http_answer> service::post_webhook(const http_request& req,
                                                   const std::string& token) {
  const auto hook = log_.webhook_by_token(server::sha256(token));
  if (!hook) co_return error_answer(404, "not_found", "no such webhook");
  std::chrono::milliseconds retry_after{0};
  if (rate_limited(hook->id, retry_after)) {
    ++counters_.webhooks_by_status["rate_limited"];
    auto a = error_answer(429, "rate_limited", "this webhook is sending too fast");
    a.response.headers.emplace_back(
        "Retry-After", std::to_string(std::max<std::int64_t>(1, (retry_after.count() + 999) / 1000)));
    co_return a;
  }
  server::message_request r;
  r.target.device = hook->device;
  r.target.port = hook->port;
  r.target.proto = mux::protocol_from_name(hook->protocol).value_or(mux::protocol::tcp);
  std::vector<std::string> topics;
  if (is_form(req)) {
    auto fields = parse_form(req.body);
    if (!fields) co_return error_answer(400, "bad_request", "the form: " + fields.message());
    auto payload = payload_of(form_value(*fields, "data"), form_value(*fields, "base64data"),
                              settings_.max_payload);
    if (auto* refused = std::get_if<http_answer>(&payload)) co_return std::move(*refused);
    r.payload = std::move(std::get<std::string>(payload));
    if (const auto* wait = form_value(*fields, "wait_for_reply_ms")) {
      auto ms = parse_duration(*wait + "ms", settings_.max_wait);
      if (!ms) co_return error_answer(400, "bad_request", "wait_for_reply_ms is out of range");
      r.wait = *ms;
    }
  } else {
    auto parsed = parse_message_body(
        req.body, {settings_.max_payload, settings_.max_wait, /*max_devices=*/0, true});
    if (auto* refused = std::get_if<http_answer>(&parsed)) co_return std::move(*refused);
    auto& body = std::get<message_body>(parsed);
    r.payload = std::move(body.payload);
    r.wait = body.wait;
    topics = std::move(body.topics);
  }
  // The webhook speaks with an ACL of exactly its own port.
  auto cred = std::make_shared<server::credential>();
  cred->name = "webhook:" + std::to_string(hook->id);
  auto rule = server::parse_acl_rule(hook->device + ":" + std::to_string(hook->port) + "/" +
                                     hook->protocol);
  if (rule) cred->allow = server::acl({std::move(rule).value()});
  r.sender = cred;
  r.deliver_timeout = deliver_timeout_;
  r.max_reply = settings_.max_reply;
  auto answer = co_await deliver_and_keep(std::move(r), std::move(topics), cred->name);
  if (answer.response.status < 300 || answer.response.status == 404) {
    const auto j = json::parse(answer.response.body, nullptr, false);
    ++counters_.webhooks_by_status[j.is_object() ? j.value("status", "failed") : "failed"];
  }
  co_return answer;
}

}  // namespace tether::api
