#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "client_setup.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "stdio_mode.hpp"
#include "tether/client/control_server.hpp"
#include "tether/client/dialer.hpp"
#include "tether/client/proxy.hpp"
#include "tether/client/stdio_target.hpp"
#include "tether/client/url.hpp"

namespace tether::cli {
namespace {

struct connect_flags {
  std::string url;
  std::vector<std::string> tcp_specs;
  std::vector<std::string> udp_specs;
  std::string ca_file;
  std::string pin;  // sha256:HEX of the server's key, instead of a CA
  std::string token_file;
  std::string token;
  bool json = false;
  double connect_timeout_s = 10;
  double wait_for_session_s = 30;
  double udp_idle_s = 60;
  long long udp_max_flows = 4096;
  std::string log_level = "info";
  std::string control;  // the control socket; empty: the default folder's <pid>.sock
  std::string stdio;    // --stdio DEVICE:PORT: relay stdin/stdout instead of listening
  // ssh://
  std::vector<std::string> identity_files;
  std::string known_hosts;
  std::string passphrase_file;
  bool accept_new_host_key = false;
};

// Bounds of the UDP flags: a day of idleness is already far beyond any UDP protocol's
// keepalive; a million flows per mapping is beyond what one session carries at once.
constexpr double max_udp_idle_s = 86400;
constexpr long long max_udp_flows = 1000000;

std::string number_text(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

std::chrono::milliseconds seconds(double s) {
  return std::chrono::milliseconds(static_cast<long>(s * 1000));
}

// The server settings the flags give (checked by run_connect).
client::server_settings settings_of(const connect_flags& f, const client::server_url& url) {
  client::server_settings s;
  s.url = url;
  s.ca_file = f.ca_file;
  s.pin = f.pin;
  s.token_file = f.token_file;
  for (const auto& i : f.identity_files) s.identity_files.emplace_back(i);
  s.known_hosts = f.known_hosts;
  s.accept_new_host_key = f.accept_new_host_key;
  s.passphrase_file = f.passphrase_file;
  s.connect_timeout = seconds(f.connect_timeout_s);
  s.wait_for_session = seconds(f.wait_for_session_s);
  s.udp_idle = seconds(f.udp_idle_s);
  s.udp_max_flows = static_cast<std::size_t>(f.udp_max_flows);
  return s;
}

// Token precedence: --token-file, then --token, then TETHER_TOKEN.
std::string token_of(const connect_flags& f, const client::server_settings& s) {
  if (f.token_file.empty() && !f.token.empty())
    std::cerr << "warning: --token puts the token on the command line, where other local "
                 "users can read it (ps, /proc); prefer --token-file FILE or TETHER_TOKEN"
              << std::endl;
  return find_token(s, f.token, "no token: pass --token-file FILE, --token TOKEN or set TETHER_TOKEN");
}

int run_connect(const connect_flags& f) {
  setup_logging(f.log_level);
  std::vector<client::mapping> mappings;
  client::server_url url;
  client::server_settings settings;
  client::dialer dial;
  std::filesystem::path control_path;
  std::optional<mux::target> stdio;
  asio::io_context io(1);
  try {
    auto parsed = client::parse_server_url(f.url);
    if (!parsed) throw std::invalid_argument(parsed.message());
    url = *parsed;
    for (const auto& spec : f.tcp_specs) {
      auto m = client::parse_mapping(spec, mux::protocol::tcp);
      if (!m) throw std::invalid_argument(m.message());
      mappings.push_back(*m);
    }
    for (const auto& spec : f.udp_specs) {
      auto m = client::parse_mapping(spec, mux::protocol::udp);
      if (!m) throw std::invalid_argument(m.message());
      if (url.kind == client::scheme::ssh)
        throw std::invalid_argument("-U '" + spec +
                                    "': UDP needs a tls:// server (SSH forwards only TCP)");
      mappings.push_back(*m);
    }
    if (!f.stdio.empty()) {
      if (!mappings.empty())
        throw std::invalid_argument("--stdio relays one stream on stdin and stdout: it cannot "
                                    "be combined with -L or -U");
      if (f.json)
        throw std::invalid_argument("--stdio keeps stdout for the stream's bytes: no --json");
      if (!f.control.empty())
        throw std::invalid_argument("--stdio has no mappings for tether map: no --control");
      auto t = client::parse_stdio_target(f.stdio);
      if (!t) throw std::invalid_argument(t.message());
      stdio = std::move(t).value();
    }
    if (mappings.empty() && !stdio)
      throw std::invalid_argument("nothing to forward: give at least one -L or -U, or --stdio");
    // Checked as numbers, not only parsed: a zero idle time would close every flow at once.
    if (!(f.udp_idle_s >= 0.001 && f.udp_idle_s <= max_udp_idle_s))
      throw std::invalid_argument("--udp-idle " + number_text(f.udp_idle_s) +
                                  ": give seconds above 0 (at least 0.001), at most " +
                                  number_text(max_udp_idle_s));
    if (f.udp_max_flows < 1 || f.udp_max_flows > max_udp_flows)
      throw std::invalid_argument("--udp-max-flows " + std::to_string(f.udp_max_flows) +
                                  ": give a number of flows from 1 to " +
                                  std::to_string(max_udp_flows));
    const bool ssh = url.kind == client::scheme::ssh;
    if (ssh && (!f.ca_file.empty() || !f.pin.empty() || !f.token_file.empty() ||
                !f.token.empty()))
      throw std::invalid_argument("--ca, --pin, --token and --token-file are for tls:// servers; "
                                  "ssh:// uses -i KEY or ssh-agent");
    if (!f.pin.empty() && !f.ca_file.empty())
      throw std::invalid_argument("--pin and --ca: give one (a pinned key is trusted without a CA)");
    if (!ssh && (!f.identity_files.empty() || !f.known_hosts.empty() || f.accept_new_host_key ||
                 !f.passphrase_file.empty()))
      throw std::invalid_argument("-i, --known-hosts, --accept-new-host-key and --passphrase-file "
                                  "are for ssh:// servers");
    settings = settings_of(f, url);
    dial = make_dialer(io.get_executor(), settings, ssh ? std::string() : token_of(f, settings));
    if (!stdio) control_path = control_socket_path(f.control);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_usage;
  }
  if (stdio) return run_stdio(io, std::move(dial), url, std::move(*stdio));

  event_printer events(f.json, server_label(url));
  client::proxy_options options;
  options.server = server_label(url);
  options.wait_for_session = settings.wait_for_session;
  options.udp_idle = settings.udp_idle;
  options.udp_max_flows = settings.udp_max_flows;
  options.udp_supported = url.kind == client::scheme::tls;
  client::proxy proxy(io.get_executor(), std::move(mappings), std::move(dial), events, options);

  // Made before the first dial, so that `tether map` finds this client while it connects.
  std::optional<client::control_server> control;
  try {
    control.emplace(io.get_executor(), control_path);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_usage;
  }
  control->add_proxy(proxy);
  control->start();
  spdlog::info("control socket {}", control_path.string());

  int exit_code = exit_ok;
  auto report_fatal = [&](const client::dial_outcome& o) {
    if (o.kind != client::dial_outcome::failure::none) exit_code = report_dial_failure(o, url);
  };

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: closing listeners, draining connections", sig);
    proxy.stop();
    signals.async_wait([&](const asio::error_code& ec2, int) {
      if (!ec2) io.stop();
    });
  });

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto first = co_await proxy.connect_first();
        if (first.kind != client::dial_outcome::failure::none) {
          report_fatal(first);
          signals.cancel();
          control->stop();
          co_return;
        }
        proxy.listen();
        auto end = co_await proxy.run();
        report_fatal(end);
        signals.cancel();
        control->stop();
      },
      [&](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          std::cerr << "error: " << x.what() << std::endl;
        }
        exit_code = exit_failure;
        io.stop();
      });
  io.run();
  return exit_code;
}

}  // namespace

void add_connect_command(CLI::App& app, action& run) {
  auto f = std::make_shared<connect_flags>();
  auto* cmd = app.add_subcommand(
      "connect", "Map local ports to device ports through a tunnel server");
  cmd->add_option("url", f->url, "tls://HOST[:PORT] (or ssh://[USER@]HOST[:PORT])")->required();
  cmd->add_option("-L", f->tcp_specs, "[BIND:]LPORT:DEVICE:DPORT, TCP (repeatable)");
  cmd->add_option("-U", f->udp_specs, "[BIND:]LPORT:DEVICE:DPORT, UDP (repeatable)");
  cmd->add_option("--pin", f->pin,
                  "Trust the server whose key has this fingerprint (sha256:HEX, from `tether "
                  "server --print-fingerprint`) instead of a CA");
  cmd->add_option("--ca", f->ca_file, "CA certificate file to verify the server (default: the "
                                      "system trust store)");
  cmd->add_option("--token-file", f->token_file, "File holding the access token");
  cmd->add_option("--token", f->token,
                  "The access token (prefer --token-file or TETHER_TOKEN: command lines are "
                  "visible to other users)");
  cmd->add_option("-i,--identity", f->identity_files,
                  "ssh://: private key file (repeatable; default: keys of ssh-agent)");
  cmd->add_option("--known-hosts", f->known_hosts,
                  "ssh://: known_hosts file (default ~/.ssh/known_hosts)");
  cmd->add_flag("--accept-new-host-key", f->accept_new_host_key,
                "ssh://: trust and record the key of a host not in known_hosts (a changed "
                "key is always refused)");
  cmd->add_option("--passphrase-file", f->passphrase_file,
                  "ssh://: file holding the key's passphrase (or set TETHER_SSH_PASSPHRASE)");
  cmd->add_flag("--json", f->json, "Print events as JSON lines");
  cmd->add_option("--connect-timeout", f->connect_timeout_s, "Seconds to connect and handshake")
      ->capture_default_str();
  cmd->add_option("--wait-for-session", f->wait_for_session_s,
                  "Seconds a new local connection waits for the tunnel while it is down")
      ->capture_default_str();
  cmd->add_option("--udp-idle", f->udp_idle_s,
                  "Seconds a UDP flow (one local source address) may go without a datagram "
                  "either way before it ends")
      ->capture_default_str();
  cmd->add_option("--udp-max-flows", f->udp_max_flows,
                  "UDP flows per -U mapping; a new source past it closes the least recently "
                  "used flow")
      ->capture_default_str();
  cmd->add_option("--stdio", f->stdio,
                  "DEVICE:PORT: relay stdin and stdout to that one port and exit when the "
                  "stream ends, e.g. as ssh's ProxyCommand (tether connect URL --stdio %h:%p)");
  auto* log_level =
      cmd->add_option("--log-level", f->log_level,
                      "trace, debug, info, warn, error or off (default warn with --stdio)")
          ->capture_default_str();
  cmd->add_option("--control", f->control,
                  "Control socket for tether map (default: $XDG_RUNTIME_DIR/tether/PID.sock, "
                  "else ~/.local/state/tether/run/PID.sock)");
  cmd->callback([f, &run, log_level] {
    // Under ssh the terminal is the user's: only warnings and errors belong there.
    if (!f->stdio.empty() && log_level->count() == 0) f->log_level = "warn";
    run = [f] { return run_connect(*f); };
  });
}

}  // namespace tether::cli
