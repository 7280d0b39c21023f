#include "tether/server/catalog.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <span>

namespace tether::server {
namespace {

const char* proto_name(const std::optional<mux::protocol>& p) {
  if (!p) return "any";
  return mux::protocol_name(*p);
}

// Sends the document, half-closes, and waits for the client's FIN (or the end of the
// stream), so that the stream ends as a completed exchange rather than a reset.
class catalog_upstream final : public upstream {
 public:
  explicit catalog_upstream(std::string document) : document_(std::move(document)) {}

  asio::awaitable<std::optional<refusal>> connect() override { co_return std::nullopt; }

  asio::awaitable<relay_outcome> relay(mux::channel& ch) override {
    relay_outcome out;
    const auto bytes = std::as_bytes(std::span(document_));
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      auto [ec, credit] = co_await ch.wait_send_credit();
      if (ec) {
        out.error = ec;
        co_return out;
      }
      const auto n = std::min(credit, bytes.size() - sent);
      if (auto sec = co_await ch.send(bytes.subspan(sent, n))) {
        out.error = sec;
        co_return out;
      }
      sent += n;
      out.bytes_from_device += n;
    }
    if (auto ec = co_await ch.send_eof()) {
      out.error = ec;
      co_return out;
    }
    // The client has nothing to say; whatever it sends anyway is read and dropped.
    for (;;) {
      auto [ec, data] = co_await ch.receive();
      if (ec) {
        out.error = ec;
        break;
      }
      if (data.empty()) break;
      out.bytes_to_device += data.size();
      ch.consumed(data.size());
    }
    co_return out;
  }

 private:
  std::string document_;
};

std::int64_t epoch_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A failed dial's reason as a stable word for scripts (the words for people are in
// `message`): what relay::dial_failure gives.
const char* dial_error_name(errc e) {
  switch (e) {
    case errc::refused: return "refused";
    case errc::unreachable: return "unreachable";
    case errc::timed_out: return "timed_out";
    default: return "failed";
  }
}

// Reachability, traffic and the last dial of one device, for the HTTP API.
void add_activity(nlohmann::ordered_json& entry, const device& d, const device_activity& activity,
                  const agent_directory* agents) {
  const auto a = activity.find(d.id);
  if (d.agent) {
    const auto found = agents ? agents->find(d.id) : agent_directory::lookup{};
    entry["reachable"] = found.online != nullptr;
    if (found.online) {
      entry["agent_since_ms"] = epoch_ms(found.online->since);
    } else if (found.last_seen) {
      entry["agent_last_seen_ms"] = epoch_ms(*found.last_seen);
    }
  } else if (a.last_dial) {
    // A refusal (a TCP reset) comes from the device's address: the device is there, its
    // port is closed. A timeout or "no route" says nothing reached it.
    entry["reachable"] = a.last_dial->ok || a.last_dial->code == errc::refused;
    nlohmann::ordered_json dial{{"ok", a.last_dial->ok}};
    if (!a.last_dial->ok) dial["error"] = dial_error_name(a.last_dial->code);
    dial["message"] = a.last_dial->message;
    dial["at_ms"] = epoch_ms(a.last_dial->at);
    entry["last_dial"] = std::move(dial);
  } else {
    entry["reachable"] = nullptr;  // not dialed since the server started
  }
  const auto t = a.total();
  entry["streams_open"] = t.streams_open;
  entry["streams_opened"] = t.streams_opened;
  entry["bytes_to_device"] = t.bytes_to_device;
  entry["bytes_from_device"] = t.bytes_from_device;
}

}  // namespace

std::string catalog_json(const registry& devices, const acl& allowed,
                         const agent_directory* agents, const device_activity* activity) {
  auto list = nlohmann::ordered_json::array();
  devices.for_each([&](const device& d) {
    auto ports = nlohmann::ordered_json::array();
    for (const auto& rule : allowed.rules()) {
      if (!glob_match(rule.device_glob, d.id)) continue;
      nlohmann::ordered_json range = {
          {"min", rule.port_min}, {"max", rule.port_max}, {"proto", proto_name(rule.proto)}};
      if (std::find(ports.begin(), ports.end(), range) == ports.end())
        ports.push_back(std::move(range));
    }
    if (ports.empty()) return;
    nlohmann::ordered_json entry = {{"id", d.id}, {"kind", d.agent ? "agent" : "direct"}};
    if (d.agent) entry["online"] = agents != nullptr && agents->find(d.id).online != nullptr;
    entry["ports"] = std::move(ports);
    if (activity) add_activity(entry, d, *activity, agents);
    list.push_back(std::move(entry));
  });
  return nlohmann::ordered_json{{"devices", std::move(list)}}.dump();
}

std::unique_ptr<upstream> make_catalog_upstream(std::string document) {
  return std::make_unique<catalog_upstream>(std::move(document));
}

}  // namespace tether::server
