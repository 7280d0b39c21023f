// `tether devices URL`: what the token may reach. Dials the server once, reads the device
// catalog (docs/PROTOCOL.md, "The device catalog") and prints it as a table or, with --json,
// as the server's JSON document.

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "client_setup.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tls_flags.hpp"
#include "tether/client/url.hpp"
#include "tether/printable.hpp"

namespace tether::cli {
namespace {

// A catalog is a few dozen bytes per device: this is far beyond any registry, and bounds
// what a misbehaving server can make us hold.
constexpr std::size_t max_catalog_bytes = 4 << 20;

struct devices_flags {
  std::string url;
  tls_flags tls;
  bool json = false;
};

// What the catalog exchange came to: the document, or the exit code already reported.
struct catalog_result {
  std::string document;
  int exit_code = exit_ok;
};

asio::awaitable<catalog_result> fetch_catalog(client::dialer dial, client::server_url url,
                                              bool json, credential_origin origin) {
  catalog_result out;
  auto dialed = co_await dial();
  if (!dialed.tunnel) {
    out.exit_code = report_dial_failure(dialed, url, json, origin);
    co_return out;
  }
  auto tunnel = std::move(dialed.tunnel);
  // A named local: g++ 12 destroys a temporary argument of a co_await expression twice.
  mux::target catalog{"", 0, mux::protocol::catalog};
  auto [ec, ch] = co_await tunnel->open(std::move(catalog));
  if (ec) {
    const auto words = tunnel->last_open_error();
    report_error(json, exit_failure, errc_name(static_cast<errc>(ec.value())),
                 "the server did not answer the device catalog request: " +
                     (words.empty() ? ec.message() : words));
    tunnel->close();
    out.exit_code = exit_failure;
    co_return out;
  }
  for (;;) {
    auto [rec, data] = co_await ch->receive();
    if (rec) {
      report_error(json, exit_failure, "failed",
                   "the device catalog ended early: " + rec.message());
      out.exit_code = exit_failure;
      break;
    }
    if (data.empty()) break;
    if (out.document.size() + data.size() > max_catalog_bytes) {
      report_error(json, exit_failure, "failed",
                   "the server's device catalog is larger than " +
                       std::to_string(max_catalog_bytes >> 20) + " MiB");
      out.exit_code = exit_failure;
      break;
    }
    out.document.append(reinterpret_cast<const char*>(data.data()), data.size());
    ch->consumed(data.size());
  }
  if (out.exit_code == exit_ok) co_await ch->send_eof();
  ch.reset();
  tunnel->close();
  co_return out;
}

// "22/tcp", "8000-8099", "*/udp": one port range of the catalog as people write ACL rules.
std::string ports_text(const nlohmann::json& range) {
  const int min = range.at("min").get<int>();
  const int max = range.at("max").get<int>();
  std::string text = min == 1 && max == 65535 ? "*"
                     : min == max            ? std::to_string(min)
                                             : std::to_string(min) + "-" + std::to_string(max);
  const auto proto = range.at("proto").get<std::string>();
  if (proto != "any") text += "/" + proto;
  return printable(text);
}

// "direct", "agent", or "agent (offline)" when the device's agent is not connected now.
std::string kind_text(const nlohmann::json& device) {
  const auto kind = printable(device.value("kind", std::string("direct")));
  return kind == "agent" && !device.value("online", true) ? kind + " (offline)" : kind;
}

void print_table(const nlohmann::json& doc, const std::string& server) {
  const auto& devices = doc.at("devices");
  if (devices.empty()) {
    std::cout << "this token may reach no device on " << server << std::endl;
    return;
  }
  std::size_t id_width = 6;    // "DEVICE"
  std::size_t kind_width = 6;  // "direct"
  for (const auto& d : devices) {
    id_width = std::max(id_width, printable(d.at("id").get<std::string>()).size());
    kind_width = std::max(kind_width, kind_text(d).size());
  }
  std::cout << std::left << std::setw(static_cast<int>(id_width) + 2) << "DEVICE"
            << std::setw(static_cast<int>(kind_width) + 2) << "KIND"
            << "PORTS" << '\n';
  for (const auto& d : devices) {
    std::string ports;
    for (const auto& range : d.at("ports")) ports += (ports.empty() ? "" : ", ") + ports_text(range);
    std::cout << std::setw(static_cast<int>(id_width) + 2)
              << printable(d.at("id").get<std::string>()) << std::setw(static_cast<int>(kind_width) + 2)
              << kind_text(d) << ports << '\n';
  }
  std::cout << std::flush;
}

int run_devices(const devices_flags& f) {
  setup_logging("warn");
  client::server_url url;
  client::dialer dial;
  credential_origin origin;  // for the message of a failed dial
  asio::io_context io(1);
  try {
    auto parsed = client::parse_server_url(f.url);
    if (!parsed) throw std::invalid_argument(parsed.message());
    url = *parsed;
    if (url.kind == client::scheme::ssh)
      throw std::invalid_argument("tether devices needs a tls:// server: an SSH server keeps "
                                  "no device registry");
    const auto s = tls_settings_of(f.tls, url);
    auto token = tls_token_of(f.tls, s);
    origin = origin_of(f.tls.pin, token.source);
    dial = make_dialer(io.get_executor(), s, std::move(token.token));
  } catch (const std::invalid_argument& e) {
    report_error(f.json, exit_usage, "usage", e.what());
    return exit_usage;
  } catch (const std::exception& e) {
    report_error(f.json, exit_failure, "failed", e.what());
    return exit_failure;
  }

  // Ctrl-C while the server is slow to answer: stop at once, as a shell would.
  bool interrupted = false;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const asio::error_code& ec, int) {
    if (ec) return;
    interrupted = true;
    io.stop();
  });
  catalog_result result;
  run_main(io, f.json, result.exit_code, [&]() -> asio::awaitable<void> {
    result = co_await fetch_catalog(std::move(dial), url, f.json, origin);
    signals.cancel();
  });
  if (interrupted) return exit_interrupted;
  if (result.exit_code != exit_ok) return result.exit_code;

  const auto doc = nlohmann::json::parse(result.document, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("devices") ||
      !doc.at("devices").is_array()) {
    report_error(f.json, exit_failure, "failed", "the server's device catalog is not valid JSON");
    return exit_failure;
  }
  try {
    if (f.json)
      std::cout << doc.dump() << std::endl;
    else
      print_table(doc, server_label(url));
  } catch (const nlohmann::json::exception&) {
    report_error(f.json, exit_failure, "failed",
                 "the server's device catalog lacks a field it should have");
    return exit_failure;
  }
  return exit_ok;
}

}  // namespace

void add_devices_command(CLI::App& app, action& run) {
  auto f = std::make_shared<devices_flags>();
  auto* cmd = app.add_subcommand(
      "devices", "List the devices and ports the token may reach on a tls:// server");
  cmd->add_option("url", f->url, "tls://HOST[:PORT] of the tether server")->required();
  add_tls_options(*cmd, f->tls);
  cmd->add_flag("--json", f->json, "Print the server's catalog as one JSON document");
  cmd->callback([f, &run] { run = [f] { return run_devices(*f); }; });
}

}  // namespace tether::cli
