// tether messages: the server's message log through the HTTP API, a page at a time or, with
// --follow, live (Server-Sent Events).
#include <nlohmann/json.hpp>

#include <iostream>

#include "api_flags.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tether/api/text.hpp"
#include "tether/printable.hpp"

namespace tether::cli {
namespace {

struct messages_flags {
  api_flags api;
  std::string device;
  std::string topic;
  long long since = 0;
  int limit = 100;
  bool follow = false;
  bool json = false;
};

// One row: "12 dev-42:9876/tcp to_device delivered "hello"" or its JSON.
void print_row(const nlohmann::json& m, bool json) {
  if (json) {
    std::cout << m.dump() << std::endl;
    return;
  }
  std::string data = m.contains("data") ? m.value("data", "") : "base64:" + m.value("base64data", "");
  std::cout << m.value("id", 0) << " " << printable(m.value("device", "")) << ":"
            << m.value("port", 0) << "/" << printable(m.value("protocol", "")) << " "
            << printable(m.value("direction", "")) << " "
            << printable(m.value("status", m.contains("reply_to") ? "reply to " + std::to_string(m.value("reply_to", 0)) : std::string()))
            << " \"" << printable(data) << "\"" << std::endl;
}

std::string query(const messages_flags& f, bool paging) {
  std::string q;
  auto add = [&](const std::string& k, const std::string& v) {
    q += (q.empty() ? "?" : "&") + k + "=" + api::percent_encode(v);
  };
  if (!f.device.empty()) add("device", f.device);
  if (!f.topic.empty()) add("topic", f.topic);
  if (f.since > 0) add("since", std::to_string(f.since));
  if (paging) add("limit", std::to_string(f.limit));
  return q;
}

int run_messages(const messages_flags& f) {
  auto client = api_client_options(f.api, f.json);
  if (!client) return exit_usage;
  auto& o = *client;
  if (!f.follow) {
    const auto r = api::call(o, "GET", "/api/v1/messages" + query(f, true));
    if (r.status != 200) return report_api_failure(r, f.json);
    const auto page = nlohmann::json::parse(r.body, nullptr, false);
    for (const auto& m : page.value("messages", nlohmann::json::array())) print_row(m, f.json);
    return exit_ok;
  }
  // Server-Sent Events: lines; a "data:" line carries one row.
  std::string pending;
  const auto r = api::follow(o, "/api/v1/messages/stream" + query(f, false),
                             [&](std::string_view chunk) {
                               pending.append(chunk);
                               std::size_t eol;
                               while ((eol = pending.find('\n')) != std::string::npos) {
                                 const auto line = pending.substr(0, eol);
                                 pending.erase(0, eol + 1);
                                 if (line.rfind("data: ", 0) != 0) continue;
                                 const auto m = nlohmann::json::parse(line.substr(6), nullptr, false);
                                 if (m.is_object()) print_row(m, f.json);
                               }
                               return pending.size() < 4 * 1024 * 1024;
                             });
  if (r.status != 200) return report_api_failure(r, f.json);
  report_error(f.json, exit_failure, "stream_ended", "the live feed ended" + (r.error.empty() ? "" : ": " + r.error));
  return exit_failure;
}

}  // namespace

void add_messages_command(CLI::App& app, action& run) {
  auto f = std::make_shared<messages_flags>();
  auto* cmd = app.add_subcommand("messages", "Show the server's message log (HTTP API)");
  add_api_flags(*cmd, f->api);
  cmd->add_option("--device", f->device, "Only this device's messages");
  cmd->add_option("--topic", f->topic, "Only messages with this topic (_API_RESP_: replies)");
  cmd->add_option("--since", f->since, "Only messages after this id");
  cmd->add_option("--limit", f->limit, "At most this many (without --follow)")
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("--follow,-f", f->follow, "Print new messages as they are stored, until stopped");
  cmd->add_flag("--json", f->json, "One JSON object per line");
  cmd->callback([f, &run] { run = [f] { return run_messages(*f); }; });
}

}  // namespace tether::cli
