// `tether agent URL --token-file FILE --allow PORTS [--target ADDRESS]`: the side of a
// device that the server cannot dial (docs/AGENTS.md).

#include <spdlog/spdlog.h>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <memory>

#include "client_setup.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tether/agent/agent.hpp"
#include "tether/client/url.hpp"
#include "tether/transport/host.hpp"
#include "tls_flags.hpp"

namespace tether::cli {
namespace {

struct agent_flags {
  std::string url;
  tls_flags tls;  // --ca, --pin, --token-file, --token, --connect-timeout
  std::string allow;
  std::string target = "127.0.0.1";
  double dial_timeout_s = 5;
  double udp_idle_s = 60;
  bool json = false;
  std::string log_level = "info";
};

constexpr double max_seconds = 86400;

std::chrono::milliseconds seconds_flag(const char* flag, double s) {
  if (!(s >= 0.001 && s <= max_seconds))
    throw std::invalid_argument(std::string(flag) + ": give seconds above 0, at most 86400");
  return std::chrono::milliseconds(static_cast<long>(s * 1000));
}

int run_agent(const agent_flags& f) {
  setup_logging(f.log_level);
  asio::io_context io(1);
  client::server_settings settings;
  agent::agent_options options;
  std::string token;
  credential_origin origin;  // for the message of a failed dial
  try {
    auto parsed = client::parse_server_url(f.url);
    if (!parsed) throw std::invalid_argument(parsed.message());
    if (parsed->kind != client::scheme::tls)
      throw std::invalid_argument("an agent connects to a tether server: give a tls:// URL");
    settings = tls_settings_of(f.tls, *parsed);
    auto found = tls_token_of(f.tls, settings);
    token = std::move(found.token);
    origin = origin_of(f.tls.pin, std::move(found.source));
    auto allow = agent::parse_allow_list(f.allow);
    if (!allow) throw std::invalid_argument("--allow '" + f.allow + "': " + allow.message());
    if (!transport::is_valid_host(f.target))
      throw std::invalid_argument("--target '" + f.target +
                                  "': not a host name or IP address (no port: each stream "
                                  "gives it)");
    options.server = server_label(settings.url);
    options.allow = std::move(allow).value();
    options.target = f.target;
    options.dial_timeout = seconds_flag("--dial-timeout", f.dial_timeout_s);
    options.udp_idle = seconds_flag("--udp-idle", f.udp_idle_s);
  } catch (const std::exception& e) {
    report_error(f.json, exit_usage, "usage", e.what());
    return exit_usage;
  }

  // The CA or pin is checked now, before anything runs: a file that cannot be used is a
  // mistake of the command line.
  auto base = tls_options_of(settings, std::move(token));
  base.role = wire::role::agent;
  try {
    client::make_tls_dialer(io.get_executor(), base);
  } catch (const std::exception& e) {
    report_error(f.json, exit_usage, "usage", e.what());
    return exit_usage;
  }
  event_printer events(f.json, options.server);
  agent::agent a(
      io.get_executor(),
      [ex = io.get_executor(), base](mux::session::open_handler on_open) {
        auto o = base;
        o.on_open = std::move(on_open);
        return client::make_tls_dialer(ex, std::move(o));
      },
      events, options);

  int exit_code = exit_ok;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: closing the session", sig);
    a.stop();
  });
  run_main(io, f.json, exit_code, [&]() -> asio::awaitable<void> {
    events.connecting();
    const auto end = co_await a.run();
    if (end.kind != client::dial_outcome::failure::none)
      exit_code = report_dial_failure(end, settings.url, f.json, origin);
    signals.cancel();
  });
  return exit_code;
}

}  // namespace

void add_agent_command(CLI::App& app, action& run) {
  auto f = std::make_shared<agent_flags>();
  auto* cmd = app.add_subcommand(
      "agent",
      "Run on a device the server cannot dial: keep a session to the server open and serve "
      "the streams it opens toward this device's ports (only those --allow lists)");
  cmd->add_option("url", f->url, "tls://HOST[:PORT] of the tether server")->required();
  add_tls_options(*cmd, f->tls, "device's agent token (of a credential with agent_for)");
  cmd->add_option("--allow", f->allow,
                  "Ports the server may reach, TCP and UDP, like 22,80,5000-5100; any other is "
                  "refused as forbidden")
      ->required();
  cmd->add_option("--target", f->target,
                  "Address the ports are dialed on (default 127.0.0.1: this device)")
      ->capture_default_str();
  cmd->add_option("--dial-timeout", f->dial_timeout_s, "Seconds to connect to a port")
      ->capture_default_str();
  cmd->add_option("--udp-idle", f->udp_idle_s,
                  "Seconds a UDP flow may go without a datagram either way before it ends")
      ->capture_default_str();
  cmd->add_flag("--json", f->json, "Print events as JSON lines");
  cmd->add_option("--log-level", f->log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  cmd->callback([f, &run] { run = [f] { return run_agent(*f); }; });
}

}  // namespace tether::cli
