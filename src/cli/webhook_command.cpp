// tether webhook create|ls|rm: a device port's webhook URLs, through the HTTP API.
#include <nlohmann/json.hpp>

#include <iostream>

#include "api_flags.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tether/api/text.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/printable.hpp"

namespace tether::cli {
namespace {

struct webhook_flags {
  api_flags api;
  std::string device;
  int port = 0;
  bool udp = false;
  std::string id;
  bool json = false;
};

// Runs one call; prints the JSON answer with --json, else hands it to `show`.
int run_call(const webhook_flags& f, const std::string& method, const std::string& path,
             const std::string& body, const std::function<void(const nlohmann::json&)>& show) {
  auto client = api_client_options(f.api, f.json);
  if (!client) return exit_usage;
  auto& o = *client;
  const auto r = api::call(o, method, path, body);
  if (r.status < 200 || r.status > 299) return report_api_failure(r, f.json);
  const auto answer = nlohmann::json::parse(r.body, nullptr, false);
  if (f.json)
    std::cout << answer.dump() << std::endl;
  else
    show(answer);
  return exit_ok;
}

std::string hooks_path(const webhook_flags& f) {
  return "/api/v1/devices/" + api::percent_encode(f.device) + "/webhooks";
}

}  // namespace

void add_webhook_command(CLI::App& app, action& run) {
  auto* cmd = app.add_subcommand("webhook", "Manage the webhook URLs of device ports (HTTP API)");
  cmd->require_subcommand(1);

  auto f = std::make_shared<webhook_flags>();
  auto common = [&](CLI::App* sub) {
    add_api_flags(*sub, f->api);
    sub->add_option("--device", f->device, "The device id")->required();
    sub->add_flag("--json", f->json, "Print the API's answer as JSON");
  };

  auto* create = cmd->add_subcommand("create", "Make a webhook URL for a device port; it is shown once");
  common(create);
  create->add_option("--port", f->port, "The device port")->required()->check(CLI::Range(1, 65535));
  create->add_flag("--udp", f->udp, "The port is a UDP port");
  create->callback([f, &run] {
    run = [f] {
      const auto proto = mux::protocol_name(f->udp ? mux::protocol::udp : mux::protocol::tcp);
      const nlohmann::json body{{"port", f->port}, {"protocol", proto}};
      return run_call(*f, "POST", hooks_path(*f), body.dump(), [f, proto](const nlohmann::json& a) {
        std::cout << f->api.url << a.value("url", "") << std::endl;
        std::cerr << "# webhook " << a.value("id", 0) << " for " << f->device << ":" << f->port
                  << "/" << proto
                  << ": anyone with this URL can send to the port; it is not shown again.\n";
      });
    };
  });

  auto* ls = cmd->add_subcommand("ls", "List a device's webhooks (without their URLs)");
  common(ls);
  ls->callback([f, &run] {
    run = [f] {
      return run_call(*f, "GET", hooks_path(*f), "", [](const nlohmann::json& a) {
        for (const auto& w : a.value("webhooks", nlohmann::json::array()))
          std::cout << w.value("id", 0) << "\t" << printable(w.value("device", "")) << ":"
                    << w.value("port", 0) << "/" << printable(w.value("protocol", "")) << "\t"
                    << printable(w.value("created_by", "")) << std::endl;
      });
    };
  });

  auto* rm = cmd->add_subcommand("rm", "Revoke a webhook: its URL answers 404 from now on");
  common(rm);
  rm->add_option("ID", f->id, "The webhook's id (from `tether webhook ls`)")->required();
  rm->callback([f, &run] {
    run = [f] {
      return run_call(*f, "DELETE", hooks_path(*f) + "/" + api::percent_encode(f->id), "",
                      [f](const nlohmann::json&) {
                        std::cerr << "webhook " << f->id << " revoked" << std::endl;
                      });
    };
  });
}

}  // namespace tether::cli
