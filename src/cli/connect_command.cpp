#include <spdlog/spdlog.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "child_command.hpp"
#include "client_setup.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "stdio_mode.hpp"
#include "tether/client/control_server.hpp"
#include "tether/client/dialer.hpp"
#include "tether/client/proxy.hpp"
#include "tether/client/stdio_target.hpp"
#include "tether/client/url.hpp"
#include "tether/mux/session.hpp"
#include "tls_flags.hpp"

namespace tether::cli {
namespace {

struct connect_flags {
  std::string url;
  std::vector<std::string> tcp_specs;
  std::vector<std::string> udp_specs;
  std::vector<std::string> socks_specs;
  tls_flags tls;  // --ca, --pin, --token-file, --token, --connect-timeout (ssh:// too)
  bool json = false;
  double wait_for_session_s = 30;
  double udp_idle_s = 60;
  long long udp_max_flows = 4096;
  std::uint64_t max_stream_window = 0;  // 0: the session's default
  bool no_lanes = false;
  std::string max_stream_window_text;   // as typed ("99G"), for the message when out of range
  std::string log_level = "info";
  std::string control;  // the control socket; empty: the default folder's <pid>.sock
  std::string stdio;    // --stdio DEVICE:PORT: relay stdin/stdout instead of listening
  std::string retry;    // --retry N|forever; empty: none before the first session
  std::vector<std::string> command;  // after --: run once ready
  // ssh://
  std::vector<std::string> identity_files;
  std::string known_hosts;
  std::string passphrase_file;
  bool accept_new_host_key = false;
};

// Bounds of the numeric flags: a day is beyond any sensible wait or UDP keepalive; a
// million flows per mapping is beyond what one session carries at once.
constexpr double max_seconds = 86400;
constexpr long long max_udp_flows = 1000000;
constexpr std::size_t max_retries = 1000000;
// A command that cannot be started, as a shell says it.
constexpr int exit_command_not_found = 127;

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
  auto s = tls_settings_of(f.tls, url);
  for (const auto& i : f.identity_files) s.identity_files.emplace_back(i);
  s.known_hosts = f.known_hosts;
  s.accept_new_host_key = f.accept_new_host_key;
  s.passphrase_file = f.passphrase_file;
  s.wait_for_session = seconds(f.wait_for_session_s);
  s.udp_idle = seconds(f.udp_idle_s);
  s.udp_max_flows = static_cast<std::size_t>(f.udp_max_flows);
  return s;
}


// --retry: "forever" or a count of failed dials in a row.
std::optional<std::size_t> parse_retry(const std::string& text) {
  if (text.empty()) return std::nullopt;
  if (text == "forever") return client::retry_forever;
  std::size_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || end != text.data() + text.size() || n > max_retries)
    throw std::invalid_argument("--retry '" + text + "': give a number of attempts from 0 to " +
                                std::to_string(max_retries) + ", or forever");
  return n;
}

void check_seconds(const char* flag, double v, double min, const char* what) {
  if (!(v >= min && v <= max_seconds))
    throw std::invalid_argument(std::string(flag) + " " + number_text(v) + ": give seconds " +
                                what + ", at most " + number_text(max_seconds));
}

int run_connect(const connect_flags& f) {
  setup_logging(f.log_level);
  std::vector<client::mapping> mappings;
  std::vector<std::string> flag_of;  // "-L '2222:dev-42:22'", per mapping
  client::server_url url;
  client::server_settings settings;
  client::dialer dial;
  client::lane_dialer lanes;  // empty: no bulk lane
  credential_origin origin;  // for the message of a failed dial
  std::optional<std::size_t> retries;
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
      flag_of.push_back("-L '" + spec + "'");
    }
    for (const auto& spec : f.udp_specs) {
      auto m = client::parse_mapping(spec, mux::protocol::udp);
      if (!m) throw std::invalid_argument(m.message());
      if (url.kind == client::scheme::ssh)
        throw std::invalid_argument("-U '" + spec +
                                    "': UDP needs a tls:// server (SSH forwards only TCP)");
      mappings.push_back(*m);
      flag_of.push_back("-U '" + spec + "'");
    }
    for (const auto& spec : f.socks_specs) {
      auto m = client::parse_socks_mapping(spec);
      if (!m) throw std::invalid_argument(m.message());
      mappings.push_back(*m);
      flag_of.push_back("-D '" + spec + "'");
    }
    if (!f.stdio.empty()) {
      if (!mappings.empty())
        throw std::invalid_argument("--stdio relays one stream on stdin and stdout: it cannot "
                                    "be combined with -L, -U or -D");
      if (f.json)
        throw std::invalid_argument("--stdio keeps stdout for the stream's bytes: no --json");
      if (!f.control.empty())
        throw std::invalid_argument("--stdio has no mappings for tether map: no --control");
      if (!f.command.empty())
        throw std::invalid_argument("--stdio is the stream itself: no -- COMMAND");
      auto t = client::parse_stdio_target(f.stdio);
      if (!t) throw std::invalid_argument(t.message());
      stdio = std::move(t).value();
    }
    if (mappings.empty() && !stdio)
      throw std::invalid_argument(
          "nothing to forward: give at least one -L, -U or -D, or --stdio");
    // Checked as numbers, not only parsed: a zero idle time would close every flow at once.
    check_seconds("--connect-timeout", f.tls.connect_timeout_s, 0.001, "above 0 (at least 0.001)");
    check_seconds("--wait-for-session", f.wait_for_session_s, 0, "from 0");
    check_seconds("--udp-idle", f.udp_idle_s, 0.001, "above 0 (at least 0.001)");
    if (f.udp_max_flows < 1 || f.udp_max_flows > max_udp_flows)
      throw std::invalid_argument("--udp-max-flows " + std::to_string(f.udp_max_flows) +
                                  ": give a number of flows from 1 to " +
                                  std::to_string(max_udp_flows));
    retries = parse_retry(f.retry);
    const bool ssh = url.kind == client::scheme::ssh;
    // The same bounds as the server's windows (docs/CONFIG.md).
    if (f.max_stream_window != 0 &&
        (f.max_stream_window < mux::min_window || f.max_stream_window > mux::max_window))
      throw std::invalid_argument("--max-stream-window " + f.max_stream_window_text +
                                  ": give a size from 64K to 1G");
    if (ssh && f.no_lanes)
      throw std::invalid_argument("--no-lanes is for tls:// servers (an SSH server keeps one "
                                  "connection)");
    if (ssh && f.max_stream_window != 0)
      throw std::invalid_argument("--max-stream-window is for tls:// servers (SSH channels "
                                  "have the server's windows)");
    if (ssh && (!f.tls.ca_file.empty() || !f.tls.pin.empty() || !f.tls.token_file.empty() ||
                !f.tls.token.empty()))
      throw std::invalid_argument("--ca, --pin, --token and --token-file are for tls:// servers; "
                                  "ssh:// uses -i KEY or ssh-agent");
    if (!ssh && (!f.identity_files.empty() || !f.known_hosts.empty() || f.accept_new_host_key ||
                 !f.passphrase_file.empty()))
      throw std::invalid_argument("-i, --known-hosts, --accept-new-host-key and --passphrase-file "
                                  "are for ssh:// servers");
    // A key file that cannot be one is a mistake of the command line, said before dialling.
    for (const auto& file : f.identity_files)
      if (auto problem = transport::identity_file_problem(file, "-i"); !problem.empty())
        throw std::invalid_argument("-i " + file + ": " + problem);
    settings = settings_of(f, url);
    std::string token;
    if (!ssh) {
      auto found = tls_token_of(f.tls, settings);
      token = std::move(found.token);
      origin = origin_of(f.tls.pin, std::move(found.source));
    }
    settings.max_stream_window = static_cast<std::uint32_t>(f.max_stream_window);
    settings.lanes = !f.no_lanes && !stdio;  // one stream needs no second lane
    lanes = lane_dialer_of(settings, token);
    dial = make_dialer(io.get_executor(), settings, std::move(token));
    if (!stdio) control_path = control_socket_path(f.control);
  } catch (const std::exception& e) {
    // --stdio keeps stdout for the stream's bytes, even when it refuses a --json.
    report_error(f.json && f.stdio.empty(), exit_usage, "usage", e.what());
    return exit_usage;
  }
  if (stdio) return run_stdio(io, std::move(dial), url, std::move(*stdio), origin);

  if (!f.command.empty()) print_events_on_stderr();  // stdout is the command's
  event_printer events(f.json, server_label(url));
  client::proxy_options options;
  options.server = server_label(url);
  options.wait_for_session = settings.wait_for_session;
  options.udp_idle = settings.udp_idle;
  options.udp_max_flows = settings.udp_max_flows;
  options.udp_supported = url.kind == client::scheme::tls;
  options.retries = retries;
  options.bulk_lane = std::move(lanes);
  client::proxy proxy(io.get_executor(), std::move(mappings), std::move(dial), events, options);

  // Every local port is bound before the first dial: a port in use is a mistake of the
  // command line, said at once and without the network.
  if (auto failed = proxy.listen()) {
    report_error(f.json, exit_usage, "usage", flag_of[failed->index] + ": " + failed->failure.message);
    return exit_usage;
  }

  // Made before the first dial, so that `tether map` finds this client while it connects.
  auto control = open_control_socket(io.get_executor(), control_path, f.json);
  if (!control) return exit_usage;
  control->add_proxy(proxy);
  control->start();
  spdlog::info("control socket {}", control_path.string());

  int exit_code = exit_ok;
  bool dialing_first = true;
  bool finished = false;  // the signal handlers must not wait again once it is over
  std::optional<child_command> command;
  auto report_fatal = [&](const client::dial_outcome& o) {
    if (o.kind != client::dial_outcome::failure::none)
      exit_code = report_dial_failure(o, url, f.json, origin);
  };

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec || finished) return;
    if (dialing_first) {
      // Nothing is open yet: a connect in progress is abandoned at once.
      report_error(f.json, exit_interrupted, "interrupted",
                   "interrupted while connecting to " + server_label(url));
      exit_code = exit_interrupted;
      io.stop();
      return;
    }
    if (command && command->running()) {
      // The command decides when it is done (Ctrl-C reached it too, from the terminal).
      if (sig == SIGTERM) command->signal(SIGTERM);
    } else {
      spdlog::info("signal {}: closing listeners", sig);
      if (const auto open = proxy.active_connections(); open > 0)
        spdlog::warn("waiting up to {} s for {} connection{} to finish; Ctrl-C again to quit",
                     options.drain.count() / 1000, open, open == 1 ? "" : "s");
      proxy.stop();
    }
    signals.async_wait([&](const asio::error_code& ec2, int) {
      if (ec2 || finished) return;
      exit_code = exit_interrupted;
      io.stop();
    });
  });

  // With -- COMMAND, the command starts once the tunnel is ready, and its end ends tether.
  auto run_command = [&]() -> asio::awaitable<void> {
    command.emplace(io.get_executor(), f.command);
    try {
      command->start(mapping_environment(proxy.list()));
    } catch (const std::exception& e) {
      report_error(f.json, exit_failure, "command", e.what());
      exit_code = exit_command_not_found;
      proxy.stop();
      co_return;
    }
    const int code = co_await command->wait();
    spdlog::info("{} exited with code {}", command->name(), code);
    if (exit_code == exit_ok) exit_code = code;
    proxy.stop();
  };
  // Counted when ready is said: `tether map` may have added or removed mappings since.
  events.ready_when_connected([&proxy] { return proxy.list().size(); },
                              [&] {
                                if (!f.command.empty())
                                  asio::co_spawn(io, run_command(), asio::detached);
                              });

  run_main(io, f.json, exit_code, [&]() -> asio::awaitable<void> {
    events.connecting();
    // Plain assignments: g++ 12 destroys the temporaries of a co_await inside a
    // conditional expression twice.
    client::dial_outcome end = co_await proxy.connect_first();
    dialing_first = false;
    if (end.kind == client::dial_outcome::failure::none) end = co_await proxy.run();
    report_fatal(end);
    if (command && command->running()) {
      command->signal(SIGTERM);
      co_await command->wait();
    }
    finished = true;
    signals.cancel();
    control->stop();
  });
  return exit_code;
}

}  // namespace

void add_connect_command(CLI::App& app, action& run, std::vector<std::string> command) {
  auto f = std::make_shared<connect_flags>();
  f->command = std::move(command);
  auto* cmd = app.add_subcommand(
      "connect",
      "Map local ports to device ports through a tunnel server; `-- CMD ARGS...` after the "
      "options runs CMD once the tunnel is ready (with TETHER_ADDR, TETHER_PORT and "
      "TETHER_PORT_<NAME> set) and exits with its exit code");
  cmd->add_option("url", f->url, "tls://HOST[:PORT] (or ssh://[USER@]HOST[:PORT])")->required();
  cmd->add_option("-L", f->tcp_specs, "[BIND:]LPORT:DEVICE:DPORT, TCP (repeatable)");
  cmd->add_option("-U", f->udp_specs, "[BIND:]LPORT:DEVICE:DPORT, UDP (repeatable)");
  cmd->add_option("-D", f->socks_specs,
                  "[BIND:]LPORT: a SOCKS5 proxy where the host name is the device, e.g. curl "
                  "--socks5-hostname 127.0.0.1:1080 http://dev-42/ (repeatable)");
  add_tls_options(*cmd, f->tls);
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
  cmd->add_option("--max-stream-window", f->max_stream_window,
                  "tls://: how far a stream's receive window may grow on a long, fast path "
                  "(bytes, or with K, M, G; default 16M); the session's grows to twice it")
      ->transform(CLI::AsSizeValue(false))
      // Goes in front of the size conversion (transforms run newest first): it sees the text.
      ->transform([f](std::string typed) { return f->max_stream_window_text = typed; });
  cmd->add_flag("--no-lanes", f->no_lanes,
                "tls://: keep every stream on one session (by default streams that turn bulk "
                "move to a second one, so that interactive ones stay quick beside them)");
  cmd->add_option("--stdio", f->stdio,
                  "DEVICE:PORT: relay stdin and stdout to that one port and exit when the "
                  "stream ends, e.g. as ssh's ProxyCommand (tether connect URL --stdio %h:%p)");
  cmd->add_option("--retry", f->retry,
                  "N or forever: failed connection attempts in a row to retry before giving up "
                  "(default: none until a first session is made, then forever)");

  auto* log_level =
      cmd->add_option("--log-level", f->log_level,
                      "trace, debug, info, warn, error or off (default: info, or warn with "
                      "--stdio or when stdout is a terminal)")
          ->capture_default_str();
  cmd->add_option("--control", f->control,
                  "Control socket for tether map (default: $XDG_RUNTIME_DIR/tether/PID.sock, "
                  "else ~/.local/state/tether/run/PID.sock)");
  cmd->callback([f, &run, log_level] {
    // Under ssh the terminal is the user's: only warnings and errors belong there. On a
    // terminal the events say what the info lines would: print each thing once.
    const bool terminal = ::isatty(STDOUT_FILENO) && ::isatty(STDERR_FILENO) && !f->json;
    if ((!f->stdio.empty() || terminal) && log_level->count() == 0) f->log_level = "warn";
    run = [f] { return run_connect(*f); };
  });
}

}  // namespace tether::cli
