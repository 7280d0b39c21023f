#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "commands.hpp"
#include "output.hpp"
#include "stdio_mode.hpp"
#include "tether/client/control_path.hpp"
#include "tether/client/control_server.hpp"
#include "tether/client/dialer.hpp"
#include "tether/client/proxy.hpp"
#include "tether/client/stdio_target.hpp"
#include "tether/client/url.hpp"
#include "tether/server/token.hpp"

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

// Token precedence: --token-file, then --token, then TETHER_TOKEN.
std::string find_token(const connect_flags& f) {
  if (!f.token_file.empty()) return server::read_token_file(f.token_file);
  if (!f.token.empty()) {
    std::cerr << "warning: --token puts the token on the command line, where other local "
                 "users can read it (ps, /proc); prefer --token-file FILE or TETHER_TOKEN"
              << std::endl;
    return f.token;
  }
  if (const char* env = std::getenv("TETHER_TOKEN"); env && *env) return env;
  throw std::invalid_argument(
      "no token: pass --token-file FILE, --token TOKEN or set TETHER_TOKEN");
}

// The local user, the default for ssh:// URLs without one (as with ssh).
std::string local_user() {
  if (const char* u = std::getenv("USER"); u && *u) return u;
  if (const auto* pw = ::getpwuid(::geteuid())) return pw->pw_name;
  throw std::invalid_argument("cannot tell the local user name: give it as ssh://USER@HOST");
}

std::string read_secret_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read --passphrase-file " + path);
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

client::dialer ssh_dialer(asio::any_io_executor ex, const client::server_url& url,
                          const connect_flags& f) {
  transport::ssh_options o;
  o.host = url.host;
  o.port = url.port;
  o.user = url.user.empty() ? local_user() : url.user;
  for (const auto& i : f.identity_files) o.identity_files.emplace_back(i);
  if (!f.passphrase_file.empty()) o.passphrase = read_secret_file(f.passphrase_file);
  o.known_hosts = f.known_hosts;
  o.accept_new_host_key = f.accept_new_host_key;
  o.connect_timeout = seconds(f.connect_timeout_s);
  return client::make_ssh_dialer(ex, std::move(o));
}

client::dialer tls_dialer(asio::any_io_executor ex, const client::server_url& url,
                          const connect_flags& f) {
  client::tls_dial_options o;
  o.host = url.host;
  o.port = url.port;
  o.ca_file = f.ca_file;
  o.pin = f.pin;
  o.token = find_token(f);
  o.connect_timeout = seconds(f.connect_timeout_s);
  return client::make_tls_dialer(ex, std::move(o));
}

// Where this client's control socket goes, checked and cleared of a stale socket.
// Throws control_path_error (and std::runtime_error for a missing folder): usage errors.
std::filesystem::path control_socket_path(const connect_flags& f) {
  if (f.control.empty()) {
    const auto folder = client::default_control_folder();
    client::prepare_control_folder(folder);
    const auto path = folder / (std::to_string(::getpid()) + ".sock");
    client::clear_stale_socket(path);
    return path;
  }
  const std::filesystem::path path(f.control);
  client::check_control_folder(path.has_parent_path() ? path.parent_path()
                                                      : std::filesystem::path("."));
  client::clear_stale_socket(path);
  return path;
}

int run_connect(const connect_flags& f) {
  setup_logging(f.log_level);
  std::vector<client::mapping> mappings;
  client::server_url url;
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
    if (ssh) {
      dial = ssh_dialer(io.get_executor(), url, f);
    } else {
      dial = tls_dialer(io.get_executor(), url, f);
    }
    if (!stdio) control_path = control_socket_path(f);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_usage;
  }
  if (stdio) return run_stdio(io, std::move(dial), url, std::move(*stdio));

  event_printer events(f.json);
  client::proxy_options options;
  options.server = url.host.find(':') != std::string::npos
                       ? "[" + url.host + "]:" + std::to_string(url.port)
                       : url.host + ":" + std::to_string(url.port);
  options.wait_for_session = seconds(f.wait_for_session_s);
  options.udp_idle = seconds(f.udp_idle_s);
  options.udp_max_flows = static_cast<std::size_t>(f.udp_max_flows);
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
    using kind = client::dial_outcome::failure;
    if (o.kind == kind::none) return;
    if (o.kind == kind::bad_credentials && url.kind == client::scheme::tls) {
      // The server's own words, when it said more than the code does (escaped by mux).
      std::cerr << "error: authentication failed: token rejected by " << options.server;
      if (o.error != describe(errc::bad_token)) std::cerr << " (" << o.error << ")";
      std::cerr << std::endl;
    }
    else if (o.kind == kind::untrusted_server && url.kind == client::scheme::tls)
      std::cerr << "error: " << o.error << " (server " << options.server << "; check --ca)"
                << std::endl;
    else
      std::cerr << "error: " << o.error << std::endl;
    exit_code = o.kind == kind::bad_credentials    ? exit_bad_credentials
                : o.kind == kind::untrusted_server ? exit_untrusted_server
                                                   : exit_failure;
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
