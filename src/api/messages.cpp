// POST /api/v1/devices/{id}/messages, POST /api/v1/messages, GET /api/v1/messages.
#include <spdlog/spdlog.h>

#include "answers.hpp"
#include "tether/api/service.hpp"
#include "tether/api/text.hpp"

namespace tether::api {
namespace {

using nlohmann::json;

constexpr std::size_t default_page = 100;
constexpr std::size_t max_page = 1000;
constexpr std::size_t max_page_bytes = 4 * 1024 * 1024;  // of message data; then the page ends

// One device's answer: the stored message's id and status, and its replies.
json outcome_json(const std::string& device, const server::message_outcome& o,
                  const std::vector<stored_message>* rows) {
  json j{{"device", device}, {"status", server::to_string(o.status)}};
  if (!o.detail.empty()) j["detail"] = o.detail;
  if (!rows) return j;
  j["id"] = rows->front().id;
  json replies = json::array();
  for (std::size_t i = 1; i < rows->size(); ++i) {
    json r{{"id", (*rows)[i].id}};
    put_data(r, (*rows)[i].data);
    replies.push_back(std::move(r));
  }
  j["replies"] = std::move(replies);
  if (o.reply_truncated) j["reply_truncated"] = true;
  return j;
}

// Statuses that reached no device are reported, not stored: nothing was sent.
bool sent_nothing(server::message_status s) {
  return s == server::message_status::forbidden || s == server::message_status::unknown_device;
}

void log_outcome(const server::message_request& r, const server::message_outcome& o,
                 std::int64_t id, const std::string& sender) {
  std::size_t reply = 0;
  for (const auto& x : o.replies) reply += x.size();
  spdlog::info("message {} to {}:{}/{} from '{}': {}, {} bytes, reply {} bytes", id,
               r.target.device, r.target.port, mux::protocol_name(r.target.proto), sender,
               server::to_string(o.status), r.payload.size(), reply);
}

}  // namespace

asio::awaitable<http_answer> service::post_device_message(
    const http_request& req, std::shared_ptr<const server::credential> key,
    const std::string& device) {
  auto parsed = parse_message_body(
      req.body, {settings_.max_payload, settings_.max_wait, /*max_devices=*/0});
  if (auto* refused = std::get_if<http_answer>(&parsed)) co_return std::move(*refused);
  auto& body = std::get<message_body>(parsed);
  if (!key->allow.allows(device, body.port, body.protocol))
    co_return error_answer(403, "forbidden",
                           "this API key may not reach " + device + ":" +
                               std::to_string(body.port) + "/" + mux::protocol_name(body.protocol));
  server::message_request r;
  r.target = {device, body.port, body.protocol};
  r.sender = key;
  r.payload = std::move(body.payload);
  r.wait = body.wait;
  r.deliver_timeout = deliver_timeout_;
  r.max_reply = settings_.max_reply;
  co_return co_await deliver_and_keep(std::move(r), std::move(body.topics), key->name);
}

asio::awaitable<http_answer> service::deliver_and_keep(server::message_request request,
                                                       std::vector<std::string> topics,
                                                       std::string sender) {
  const auto device = request.target.device;
  if (auto busy = refuse_if_busy(1)) co_return std::move(*busy);
  std::vector<server::message_request> one;
  one.push_back(request);  // `request` keeps the payload for the log
  auto outcomes = co_await deliver_all(std::move(one));
  const auto& o = outcomes.front();
  ++counters_.messages_by_status[server::to_string(o.status)];
  if (o.status == server::message_status::unknown_device)
    co_return error_answer(404, "unknown_device", "no device '" + device + "'");
  if (o.status == server::message_status::forbidden)
    co_return error_answer(403, "forbidden", o.detail);
  auto rows = keep(request, o, topics, sender);
  if (!rows) {
    spdlog::error("{}", rows.message());
    co_return error_answer(503, "not_stored", "the message log could not store the message");
  }
  log_outcome(request, o, rows->front().id, sender);
  co_return json_answer(200, outcome_json(device, o, &*rows));
}

asio::awaitable<http_answer> service::post_messages(const http_request& req,
                                                    std::shared_ptr<const server::credential> key) {
  auto parsed = parse_message_body(
      req.body, {settings_.max_payload, settings_.max_wait, settings_.max_devices_per_message});
  if (auto* refused = std::get_if<http_answer>(&parsed)) co_return std::move(*refused);
  auto& body = std::get<message_body>(parsed);
  if (auto busy = refuse_if_busy(body.device_ids.size())) co_return std::move(*busy);
  std::vector<server::message_request> requests;
  for (const auto& device : body.device_ids) {
    server::message_request r;
    r.target = {device, body.port, body.protocol};
    r.sender = key;
    r.payload = body.payload;
    r.wait = body.wait;
    r.deliver_timeout = deliver_timeout_;
    r.max_reply = settings_.max_reply;
    requests.push_back(std::move(r));
  }
  const auto sent = requests;  // the payloads are kept for the log
  auto outcomes = co_await deliver_all(std::move(requests));
  json answers = json::array();
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const auto& o = outcomes[i];
    ++counters_.messages_by_status[server::to_string(o.status)];
    if (sent_nothing(o.status)) {
      answers.push_back(outcome_json(sent[i].target.device, o, nullptr));
      continue;
    }
    auto rows = keep(sent[i], o, body.topics, key->name);
    if (!rows) {
      spdlog::error("{}", rows.message());
      co_return error_answer(503, "not_stored", "the message log could not store the messages");
    }
    log_outcome(sent[i], o, rows->front().id, key->name);
    answers.push_back(outcome_json(sent[i].target.device, o, &*rows));
  }
  co_return json_answer(200, json{{"messages", std::move(answers)}});
}

http_answer service::get_messages(const http_request& req, const server::credential& key) {
  auto fields = parse_form(req.query);
  if (!fields) return error_answer(400, "bad_request", "the query string: " + fields.message());
  message_query q;
  q.limit = default_page;
  q.max_bytes = max_page_bytes;
  for (const auto& [name, value] : *fields) {
    if (name == "device") {
      q.device = value;
    } else if (name == "topic") {
      q.topic = value;
    } else if (name == "order") {
      if (value != "oldest" && value != "newest")
        return error_answer(400, "bad_request", "order is oldest or newest");
      q.newest_first = value == "newest";
    } else if (name == "since" || name == "limit") {
      std::int64_t n = -1;
      try {
        std::size_t used = 0;
        n = std::stoll(value, &used);
        if (used != value.size()) n = -1;
      } catch (const std::exception&) {
      }
      if (n < 0 || (name == "limit" && (n < 1 || n > static_cast<std::int64_t>(max_page))))
        return error_answer(400, "bad_request",
                            name == "since" ? "since must be a message id (a number)"
                                            : "limit must be from 1 to 1000");
      if (name == "since")
        q.since = n;
      else
        q.limit = static_cast<std::size_t>(n);
    } else {
      return error_answer(400, "bad_request",
                          "unknown parameter (device, topic, since, limit, order)");
    }
  }
  auto rows = log_.find(q);
  if (!rows) {
    spdlog::error("{}", rows.message());
    return error_answer(503, "not_available", "the message log could not be read");
  }
  json list = json::array();
  for (const auto& m : *rows) {
    // A key sees what it may send to: the devices and ports of its ACL.
    const auto proto = mux::protocol_from_name(m.protocol).value_or(mux::protocol::tcp);
    if (key.allow.allows(m.device, m.port, proto)) list.push_back(message_json(m));
  }
  // The cursor is the highest id of the page, in either order.
  auto next = q.since;
  for (const auto& m : *rows) next = std::max(next, m.id);
  return json_answer(200, json{{"messages", std::move(list)}, {"next", next}});
}

}  // namespace tether::api
