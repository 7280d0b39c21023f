// tether send: one message to a device port through the server's HTTP API; the device's
// reply goes to stdout as it came (bytes), what became of the message to stderr.
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <iterator>

#include "api_flags.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tether/api/text.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/printable.hpp"
#include "tether/transport/ssh_util.hpp"

namespace tether::cli {
namespace {

struct send_flags {
  api_flags api;
  std::string device;
  int port = 0;
  bool udp = false;
  std::string data;
  std::string file;  // "-": stdin
  std::string wait = "0";
  std::vector<std::string> topics;
  bool json = false;
};

std::string read_all(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int run_send(const send_flags& f) {
  std::string payload = f.data;
  if (!f.file.empty()) {
    if (f.file == "-") {
      payload = read_all(std::cin);
    } else {
      std::ifstream in(f.file, std::ios::binary);
      if (!in) {
        report_error(f.json, exit_usage, "bad_file", "cannot read " + f.file);
        return exit_usage;
      }
      payload = read_all(in);
    }
  }
  const auto wait = api::parse_duration(f.wait);
  if (!wait) {
    report_error(f.json, exit_usage, "bad_wait", "--wait: " + wait.message());
    return exit_usage;
  }
  auto client = api_client_options(f.api, f.json);
  if (!client) return exit_usage;
  auto& o = *client;
  o.timeout = *wait + std::chrono::seconds(30);
  const auto proto = f.udp ? mux::protocol::udp : mux::protocol::tcp;
  nlohmann::json body{{"protocol", mux::protocol_name(proto)},
                      {"port", f.port},
                      {"wait_for_reply_ms", wait->count()}};
  if (api::is_utf8(payload))
    body["data"] = payload;
  else
    body["base64data"] = transport::base64_encode(payload);
  if (!f.topics.empty()) body["topics"] = f.topics;
  const auto r = api::call(o, "POST", "/api/v1/devices/" + api::percent_encode(f.device) + "/messages",
                           body.dump());
  if (r.status != 200) return report_api_failure(r, f.json);
  const auto answer = nlohmann::json::parse(r.body, nullptr, false);
  if (!answer.is_object()) {
    report_error(f.json, exit_failure, "bad_answer", "the API's answer is not JSON");
    return exit_failure;
  }
  if (f.json) {
    std::cout << answer.dump() << std::endl;
  } else {
    std::string reply;
    for (const auto& x : answer.value("replies", nlohmann::json::array())) {
      if (x.contains("data")) reply += x["data"].get<std::string>();
      else if (auto d = transport::base64_decode(x.value("base64data", ""))) reply += *d;
    }
    std::cout << reply << std::flush;
    const auto status = answer.value("status", "");
    std::cerr << "message " << answer.value("id", 0) << " to " << f.device << ":" << f.port
              << (f.udp ? "/udp" : "/tcp") << ": " << printable(status);
    if (answer.contains("detail")) std::cerr << " (" << printable(answer.value("detail", "")) << ")";
    if (wait->count() > 0) std::cerr << ", reply " << reply.size() << " bytes";
    std::cerr << std::endl;
  }
  return answer.value("status", "") == "delivered" ? exit_ok : exit_failure;
}

}  // namespace

void add_send_command(CLI::App& app, action& run) {
  auto f = std::make_shared<send_flags>();
  auto* cmd = app.add_subcommand(
      "send", "Send one message to a device port through the server's HTTP API and print the reply");
  add_api_flags(*cmd, f->api);
  cmd->add_option("--device", f->device, "The device id")->required();
  cmd->add_option("--port", f->port, "The device port")->required()->check(CLI::Range(1, 65535));
  cmd->add_flag("--udp", f->udp, "Send one UDP datagram (default: a TCP connection)");
  auto* data = cmd->add_option("--data", f->data, "The message text");
  auto* file = cmd->add_option("--file", f->file, "Send the bytes of this file (- for stdin)");
  data->excludes(file);
  cmd->add_option("--wait", f->wait,
                  "How long to collect the device's reply, like 5s, 0.5s, 500ms or 2m, at most "
                  "24h (default: no wait)");
  cmd->add_option("--topic", f->topics, "A topic for the message log (repeatable)");
  cmd->add_flag("--json", f->json, "Print the API's answer as JSON");
  cmd->callback([f, &run, data, file] {
    if (data->count() == 0 && file->count() == 0)
      throw CLI::RequiredError("give the message with --data TEXT or --file F (- for stdin)",
                               CLI::ExitCodes::RequiredError);
    run = [f] { return run_send(*f); };
  });
}

}  // namespace tether::cli
