#include "answers.hpp"

#include "tether/api/text.hpp"
#include "tether/printable.hpp"
#include "tether/server/registry.hpp"
#include "tether/transport/ssh_util.hpp"

namespace tether::api {
namespace {

using nlohmann::json;

constexpr std::size_t max_topics = 16;
constexpr std::size_t max_topic_size = 128;

// Client-chosen topics: printable ASCII, not the server's own (which begin with '_').
bool valid_topic(const std::string& t) {
  if (t.empty() || t.size() > max_topic_size || t.front() == '_') return false;
  for (const unsigned char c : t)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

}  // namespace

http_answer error_answer(int status, std::string_view code, std::string_view message) {
  return json_answer(status, json{{"error", code}, {"message", message}});
}

http_answer json_answer(int status, const json& body) {
  http_answer a;
  a.response.status = status;
  a.response.body = body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  return a;
}

http_answer event_stream_answer(std::function<void(std::shared_ptr<http_stream>)> on_open) {
  http_answer a;
  a.response.status = 200;
  a.response.content_type = "text/event-stream";
  a.response.headers.emplace_back("Cache-Control", "no-cache");
  a.stream = std::move(on_open);
  return a;
}

void put_data(json& j, const std::string& bytes) {
  if (is_utf8(bytes))
    j["data"] = bytes;
  else
    j["base64data"] = transport::base64_encode(bytes);
}

json message_json(const stored_message& m) {
  json j{{"id", m.id},
         {"created_ms", m.created_ms},
         {"device", m.device},
         {"port", m.port},
         {"protocol", m.protocol},
         {"direction", m.direction},
         {"sender", m.sender},
         {"topics", m.topics}};
  if (m.reply_to != 0) j["reply_to"] = m.reply_to;
  if (!m.status.empty()) j["status"] = m.status;
  put_data(j, m.data);
  return j;
}

std::variant<std::string, http_answer> payload_of(const std::string* data,
                                                  const std::string* base64data,
                                                  std::size_t max_payload) {
  if ((data != nullptr) == (base64data != nullptr))
    return error_answer(400, "bad_request", "give exactly one of \"data\" and \"base64data\"");
  std::string payload;
  if (data) {
    payload = *data;
  } else {
    auto decoded = transport::base64_decode(*base64data);
    if (!decoded) return error_answer(400, "bad_request", "\"base64data\" is not base64");
    payload = std::move(*decoded);
  }
  if (payload.size() > max_payload)
    return error_answer(413, "payload_too_large",
                        "the payload is " + std::to_string(payload.size()) +
                            " bytes; the limit is " + std::to_string(max_payload));
  return payload;
}

std::variant<message_body, http_answer> parse_message_body(std::string_view text,
                                                           const body_limits& limits) {
  // JSON escapes make a body up to 6 bytes per payload byte; base64 4 per 3. Past that the
  // payload cannot fit whatever it holds.
  if (text.size() > 6 * limits.max_payload + 64 * 1024)
    return error_answer(413, "payload_too_large",
                        "the body is larger than a message of " +
                            std::to_string(limits.max_payload) + " bytes can be");
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return error_answer(400, "bad_request", "the body must be a JSON object");
  message_body b;
  const std::string* data = nullptr;
  const std::string* base64data = nullptr;
  for (const auto& [key, value] : j.items()) {
    if (limits.webhook && (key == "protocol" || key == "port")) {
      return error_answer(400, "bad_request", "a webhook sends to its own port: no \"" + key + "\"");
    } else if (key == "protocol") {
      const auto p = value.is_string()
                         ? mux::protocol_from_name(value.get_ref<const std::string&>())
                         : std::nullopt;
      if (!p) return error_answer(400, "bad_request", "\"protocol\" must be \"tcp\" or \"udp\"");
      b.protocol = *p;
    } else if (key == "port") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 1 ||
          value.get<std::int64_t>() > 65535)
        return error_answer(400, "bad_request", "\"port\" must be a number from 1 to 65535");
      b.port = static_cast<std::uint16_t>(value.get<std::int64_t>());
    } else if (key == "data" || key == "base64data") {
      if (!value.is_string())
        return error_answer(400, "bad_request", "\"" + key + "\" must be a string");
      (key == "data" ? data : base64data) = value.get_ptr<const std::string*>();
    } else if (key == "topics") {
      if (!value.is_array() || value.size() > max_topics)
        return error_answer(400, "bad_request",
                            "\"topics\" must be a list of at most " + std::to_string(max_topics));
      for (const auto& t : value) {
        if (!t.is_string() || !valid_topic(t.get<std::string>()))
          return error_answer(400, "bad_request",
                              "a topic is 1-128 printable ASCII characters without spaces and "
                              "does not begin with '_' (those are the server's)");
        b.topics.push_back(t.get<std::string>());
      }
    } else if (key == "wait_for_reply_ms") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 0 ||
          value.get<std::int64_t>() > limits.max_wait.count())
        return error_answer(400, "bad_request",
                            "\"wait_for_reply_ms\" must be a number from 0 to " +
                                std::to_string(limits.max_wait.count()));
      b.wait = std::chrono::milliseconds(value.get<std::int64_t>());
    } else if (key == "deviceids" && limits.max_devices > 0) {
      if (!value.is_array() || value.empty() || value.size() > limits.max_devices)
        return error_answer(400, "bad_request",
                            "\"deviceids\" must be a list of 1 to " +
                                std::to_string(limits.max_devices) + " device ids");
      for (const auto& d : value) {
        if (!d.is_string() || !server::is_valid_device_id(d.get<std::string>()))
          return error_answer(400, "bad_request",
                              "a device id is 1-64 of A-Z a-z 0-9 . _ -");
        b.device_ids.push_back(d.get<std::string>());
      }
    } else {
      return error_answer(400, "bad_request", "unknown field \"" + printable(key) + "\"");
    }
  }
  if (b.port == 0 && !limits.webhook)
    return error_answer(400, "bad_request", "\"port\" is missing");
  if (limits.max_devices > 0 && b.device_ids.empty())
    return error_answer(400, "bad_request", "\"deviceids\" is missing");
  auto payload = payload_of(data, base64data, limits.max_payload);
  if (auto* refused = std::get_if<http_answer>(&payload)) return std::move(*refused);
  b.payload = std::move(std::get<std::string>(payload));
  return b;
}

}  // namespace tether::api
