#include "api_flags.hpp"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <iostream>

#include "commands.hpp"
#include "output.hpp"
#include "tether/printable.hpp"
#include "tether/server/token.hpp"

namespace tether::cli {

void add_api_flags(CLI::App& cmd, api_flags& f) {
  cmd.add_option("--api", f.url, "The server's API, like https://cloud.example:8443")
      ->envname("TETHER_API");
  cmd.add_option("--api-key-file", f.key_file,
                 "A file holding the API key (else the TETHER_API_KEY environment variable)");
  cmd.add_option("--ca", f.ca_file, "CA certificate (PEM) the API's certificate is checked with");
}

std::optional<api::client_options> api_client_options(const api_flags& f, bool json) {
  api::client_options o;
  o.url = f.url;
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  o.ca_file = f.ca_file;
  try {
    if (o.url.empty()) throw std::runtime_error("give the API's URL with --api or TETHER_API");
    if (!f.key_file.empty()) {
      o.key = server::read_token_file(f.key_file);
    } else if (const char* k = std::getenv("TETHER_API_KEY"); k && *k) {
      o.key = k;
    } else {
      throw std::runtime_error("give the API key with --api-key-file or TETHER_API_KEY");
    }
  } catch (const std::exception& e) {
    report_error(json, exit_usage, "usage", e.what());
    return std::nullopt;
  }
  return o;
}

int report_api_failure(const api::client_response& r, bool json) {
  if (r.status == 0) {
    report_error(json, exit_failure, "unreachable", "cannot reach the API: " + r.error);
    return exit_failure;
  }
  const auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::string code = "http_" + std::to_string(r.status);
  std::string message = "the API answered " + std::to_string(r.status);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    code = printable(j["error"].get<std::string>());
    if (j.contains("message") && j["message"].is_string())
      message = printable(j["message"].get<std::string>());
  }
  const int exit = r.status == 401 ? exit_bad_credentials
                   : r.status == 400 || r.status == 403 || r.status == 404 || r.status == 413
                       ? exit_usage
                       : exit_failure;
  report_error(json, exit, code, message);
  return exit;
}

}  // namespace tether::cli
