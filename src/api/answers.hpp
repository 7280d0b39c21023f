#pragma once
// The API's JSON answers and the message body it reads, shared by its handlers.

#include <nlohmann/json.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <variant>
#include <string>
#include <vector>

#include "tether/api/http.hpp"
#include "tether/api/message_log.hpp"
#include "tether/mux/tunnel.hpp"

namespace tether::api {

/// {"error": code, "message": words}: `code` is stable, `message` for people.
http_answer error_answer(int status, std::string_view code, std::string_view message);

http_answer json_answer(int status, const nlohmann::json& body);

/// A 200 text/event-stream head, not to be cached; `on_open` gets the stream once the head
/// is written. The feeds hold their service weakly in it: a feed must not keep a stopping
/// service alive.
http_answer event_stream_answer(std::function<void(std::shared_ptr<http_stream>)> on_open);

/// A stored row as the API shows it: `data` when the bytes are UTF-8, else `base64data`.
nlohmann::json message_json(const stored_message& m);

/// The bytes as `"data"` (UTF-8) or `"base64data"`, added to `j`.
void put_data(nlohmann::json& j, const std::string& bytes);

/// What a message body asks for, checked.
struct message_body {
  std::vector<std::string> device_ids;  // POST /api/v1/messages only
  mux::protocol protocol = mux::protocol::tcp;
  std::uint16_t port = 0;
  std::string payload;
  std::vector<std::string> topics;
  std::chrono::milliseconds wait{0};
};

struct body_limits {
  std::size_t max_payload;
  std::chrono::milliseconds max_wait;
  std::size_t max_devices;  // 0: deviceids is not allowed (the device is in the path)
  bool webhook = false;     // the port and protocol are the webhook's: not in the body
};

/// Parses a JSON message body, or returns the answer that refuses it (400, 413).
std::variant<message_body, http_answer> parse_message_body(std::string_view body,
                                                           const body_limits& limits);

/// The payload of `data` or `base64data`, or why not (400, 413).
std::variant<std::string, http_answer> payload_of(const std::string* data,
                                                  const std::string* base64data,
                                                  std::size_t max_payload);

}  // namespace tether::api
