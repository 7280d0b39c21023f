// `tether up -f FILE`: the servers and named tunnels of a tunnels file in one process, with
// one control socket for all of them; SIGHUP reloads the file.

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <algorithm>
#include <iostream>
#include <memory>
#include <optional>

#include "client_setup.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tether/client/control_server.hpp"
#include "tether/client/proxy.hpp"
#include "tether/client/reload_plan.hpp"
#include "tether/client/tunnels_file.hpp"
#include "tether/printable.hpp"
#include "tether/relay/open_files.hpp"
#include "tether/toml_check.hpp"

namespace tether::cli {
namespace {

namespace fs = std::filesystem;

struct up_flags {
  std::string file;
  bool json = false;
  std::string log_level = "info";
  std::string control;
};

// "tunnels.toml:12: tunnel 'pi-ssh'": where a tunnel is, for messages.
std::string where(const fs::path& file, const client::tunnel_spec& t) {
  return file.string() + ":" + std::to_string(t.line) + ": tunnel '" + t.label() + "'";
}

// A server of the file that could not be set up (its token, key or CA file).
struct server_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A tunnel of the file that listens, and the name its proxy gave it.
struct running_tunnel {
  client::tunnel_spec spec;
  std::string name;
};

// One server of the file while it runs.
struct running_server {
  running_server(bool json, const client::server_spec& s)
      : settings(s.settings), line(s.line), events(json, server_label(s.settings.url)) {}

  client::server_settings settings;
  std::uint32_t line;
  std::vector<running_tunnel> tunnels;  // those that listen
  event_printer events;
  credential_origin origin;  // for the message of a failed dial
  bool dialing_first = true;

  // The server as applied, for a reload to compare the file with.
  client::server_spec spec() const {
    client::server_spec s{settings, {}, line, 0};
    for (const auto& t : tunnels) s.tunnels.push_back(t.spec);
    return s;
  }

  // Adds tunnel `t` to the proxy; the failure's message when it cannot.
  std::string add(const client::tunnel_spec& t) {
    auto r = proxy->add(t.map, t.name);
    if (r.failure) return r.failure.message;
    tunnels.push_back({t, r.added.name});
    return {};
  }

  // Removes running tunnel `i` (its connections drain); returns its name.
  std::string remove(std::size_t i) {
    auto name = std::move(tunnels[i].name);
    proxy->remove(name, client::stop_mode::drain);
    tunnels.erase(tunnels.begin() + static_cast<std::ptrdiff_t>(i));
    return name;
  }
  std::unique_ptr<client::proxy> proxy;
};

// A tunnel a reload could not add, and why.
struct failed_tunnel {
  std::string name;
  std::string error;
};

class tunnel_process {
 public:
  tunnel_process(asio::io_context& io, bool json, fs::path file, client::control_server& control,
                 std::function<void()> on_end)
      : io_(io), json_(json), file_(std::move(file)), control_(control), on_end_(std::move(on_end)) {}

  /// Sets up every server of `f` and binds every tunnel. Throws server_error (a usage error)
  /// or std::runtime_error naming the tunnel that cannot listen; nothing is left running.
  void start(const client::tunnels_file& f) {
    std::vector<std::shared_ptr<running_server>> made;
    try {
      for (const auto& s : f.servers) {
        auto r = make_server(s);
        for (const auto& t : s.tunnels)
          if (auto failure = r->add(t); !failure.empty())
            throw std::runtime_error(where(file_, t) + ": " + failure);
        made.push_back(std::move(r));
      }
    } catch (...) {
      for (auto& r : made) r->proxy->stop();
      throw;
    }
    for (auto& r : made) launch(std::move(r));
  }

  /// Reads the file again and applies what changed. A file with errors changes nothing.
  void reload() {
    if (stopping_) return;
    client::tunnels_file next;
    try {
      next = client::load_tunnels_file(file_);
    } catch (const config_error& e) {
      spdlog::error("reload: {}; keeping the tunnels as they are", e.what());
      print_event(json_, {{"event", "reload_failed"}, {"file", file_.string()}, {"error", e.what()}},
                  std::string("reload failed, keeping the tunnels as they are: ") + e.what());
      return;
    }
    std::vector<client::server_spec> running;
    for (const auto& s : servers_) running.push_back(s->spec());
    const auto plan = client::plan_reload(running, next.servers);

    std::vector<std::string> removed, added;
    std::vector<failed_tunnel> failed;
    // Removals first: a tunnel that moves, or changes but keeps its port or name, finds
    // them free.
    for (const auto& k : plan.keep) {
      auto& s = *servers_[k.running];
      for (auto i = k.remove.rbegin(); i != k.remove.rend(); ++i)  // back to front: indices stay
        removed.push_back(s.remove(*i));
    }
    std::vector<std::shared_ptr<running_server>> stopped;
    for (auto i : plan.stop) stopped.push_back(servers_[i]);
    for (auto& s : stopped) {
      while (!s->tunnels.empty()) removed.push_back(s->remove(0));
      spdlog::info("reload: {} is no longer in {}; closing its session",
                   server_label(s->settings.url), file_.string());
      s->proxy->stop();
    }
    for (const auto& k : plan.keep) {
      auto& s = *servers_[k.running];
      for (const auto& t : k.add) add_tunnel(s, t, added, failed);
    }
    for (auto i : plan.start) {
      const auto& spec = next.servers[i];
      std::shared_ptr<running_server> r;
      try {
        r = make_server(spec);
      } catch (const std::exception& e) {
        for (const auto& t : spec.tunnels) failed.push_back({t.label(), e.what()});
        continue;
      }
      for (const auto& t : spec.tunnels) add_tunnel(*r, t, added, failed);
      launch(std::move(r));
    }
    report_reload(removed, added, failed);
  }

  /// Closes every listener and lets open connections drain (SIGINT, SIGTERM, a fatal error).
  void stop() {
    stopping_ = true;
    for (auto& s : servers_) s->proxy->stop();
  }

  int exit_code() const noexcept { return exit_code_; }

  /// No server has made its first session yet: nothing is open that could drain.
  bool all_dialing_first() const {
    return std::all_of(servers_.begin(), servers_.end(),
                       [](const auto& s) { return s->dialing_first; });
  }

  /// Open connections of every server.
  std::size_t active_connections() const {
    std::size_t n = 0;
    for (const auto& s : servers_) n += s->proxy->active_connections();
    return n;
  }

 private:
  std::shared_ptr<running_server> make_server(const client::server_spec& spec) {
    const auto& s = spec.settings;
    // "tunnels.toml:4: server tls://...: ": at the token_file line for a problem of that file.
    const auto at = [&](std::uint32_t line) {
      return file_.string() + ":" + std::to_string(line) + ": server " + s.url.text() + ": ";
    };
    client::dialer dial;
    client::lane_dialer lanes;
    found_token token;
    try {
      if (s.url.kind == client::scheme::tls)
        token = find_token(s, "", "no token: give token_file, or set TETHER_TOKEN");
    } catch (const std::exception& e) {
      throw server_error(at(s.token_file.empty() ? spec.line : spec.token_file_line) + e.what());
    }
    try {
      lanes = lane_dialer_of(s, token.token);
      dial = make_dialer(io_.get_executor(), s, std::move(token.token));
    } catch (const std::exception& e) {
      throw server_error(at(spec.line) + e.what());
    }
    auto r = std::make_shared<running_server>(json_, spec);
    // The file's settings, not flags: what to check is named as the file names it.
    r->origin = {std::move(token.source), (s.pin.empty() ? "ca in " : "pin in ") + file_.string()};
    client::proxy_options o;
    o.server = server_label(s.url);
    o.wait_for_session = s.wait_for_session;
    o.udp_idle = s.udp_idle;
    o.udp_max_flows = s.udp_max_flows;
    o.udp_supported = s.url.kind == client::scheme::tls;
    o.names = names_;
    o.retries = s.retries;
    o.bulk_lane = std::move(lanes);
    r->proxy = std::make_unique<client::proxy>(io_.get_executor(), std::vector<client::mapping>{},
                                               std::move(dial), r->events, o);
    return r;
  }

  void add_tunnel(running_server& s, const client::tunnel_spec& t, std::vector<std::string>& added,
                  std::vector<failed_tunnel>& failed) {
    if (auto failure = s.add(t); !failure.empty()) {
      spdlog::error("reload: {}: {}", where(file_, t), failure);
      failed.push_back({t.label(), failure});
      return;
    }
    added.push_back(s.tunnels.back().name);
  }

  void launch(std::shared_ptr<running_server> r) {
    control_.add_proxy(*r->proxy);
    servers_.push_back(r);
    asio::co_spawn(io_, serve(r), [this, r](std::exception_ptr e) {
      if (e) {
        report_internal_error(json_, e);
        fail(exit_failure);
      }
      finished(r);
    });
  }

  asio::awaitable<void> serve(std::shared_ptr<running_server> r) {
    // The events belong to `r`: a plain pointer keeps it from owning itself.
    r->events.ready_when_connected([s = r.get()] { return s->tunnels.size(); });
    r->events.connecting();
    auto outcome = co_await r->proxy->connect_first();
    r->dialing_first = false;
    if (outcome.kind == client::dial_outcome::failure::none) outcome = co_await r->proxy->run();
    if (outcome.kind != client::dial_outcome::failure::none)
      fail(report_dial_failure(outcome, r->settings.url, json_, r->origin));
  }

  // A failure retrying cannot fix ends the process, as it ends `connect`: the first one
  // decides the exit code.
  void fail(int code) {
    if (exit_code_ == exit_ok) exit_code_ = code;
    stop();
  }

  void finished(const std::shared_ptr<running_server>& r) {
    control_.remove_proxy(*r->proxy);
    std::erase(servers_, r);
    if (servers_.empty()) on_end_();
  }

  void report_reload(const std::vector<std::string>& removed, const std::vector<std::string>& added,
                     const std::vector<failed_tunnel>& failed) {
    nlohmann::ordered_json failures = nlohmann::ordered_json::array();
    std::string text = "reloaded " + file_.string() + ": " + std::to_string(added.size()) +
                       " added, " + std::to_string(removed.size()) + " removed";
    for (const auto& f : failed) {
      failures.push_back({{"name", f.name}, {"error", f.error}});
      text += "; '" + f.name + "' failed: " + f.error;
    }
    spdlog::info("{}", text);
    print_event(json_,
                {{"event", "reloaded"},
                 {"file", file_.string()},
                 {"added", added},
                 {"removed", removed},
                 {"failed", failures}},
                text);
  }

  asio::io_context& io_;
  bool json_;
  fs::path file_;
  client::control_server& control_;
  std::function<void()> on_end_;
  std::shared_ptr<client::mapping_names> names_ = std::make_shared<client::mapping_names>();
  std::vector<std::shared_ptr<running_server>> servers_;
  bool stopping_ = false;
  int exit_code_ = exit_ok;
};

int run_up(const up_flags& f) {
  setup_logging(f.log_level);
  asio::io_context io(1);
  client::tunnels_file file;
  fs::path control_path;
  try {
    if (f.file.empty()) throw std::invalid_argument("give the tunnels file with -f FILE");
    file = client::load_tunnels_file(f.file);
    control_path = control_socket_path(f.control);
  } catch (const std::exception& e) {
    report_error(f.json, exit_usage, "usage", e.what());
    return exit_usage;
  }

  auto control = open_control_socket(io.get_executor(), control_path, f.json);
  if (!control) return exit_usage;

  asio::signal_set stop_signals(io, SIGINT, SIGTERM);
  asio::signal_set reload_signal(io, SIGHUP);
  bool ended = false;  // the signal handlers must not wait again once it is over
  tunnel_process process(io, f.json, file.path, *control, [&] {
    ended = true;
    stop_signals.cancel();
    reload_signal.cancel();
    control->stop();
  });
  try {
    process.start(file);
  } catch (const server_error& e) {
    report_error(f.json, exit_usage, "usage", e.what());
    return exit_usage;
  } catch (const std::exception& e) {
    // A local port that cannot be bound: the file asks for it, so a usage error, as with -L.
    report_error(f.json, exit_usage, "usage", e.what());
    return exit_usage;
  }
  control->start();
  spdlog::info("control socket {}", control_path.string());

  int forced = exit_ok;
  stop_signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec || ended) return;
    if (process.all_dialing_first()) {
      report_error(f.json, exit_interrupted, "interrupted", "interrupted while connecting");
      forced = exit_interrupted;
      io.stop();
      return;
    }
    spdlog::info("signal {}: closing listeners", sig);
    if (const auto open = process.active_connections(); open > 0)
      spdlog::warn("waiting up to 10 s for {} connection{} to finish; Ctrl-C again to quit", open,
                   open == 1 ? "" : "s");
    reload_signal.cancel();
    process.stop();
    stop_signals.async_wait([&](const asio::error_code& ec2, int) {
      if (ec2) return;
      forced = exit_interrupted;
      io.stop();
    });
  });
  std::function<void()> await_reload = [&] {
    reload_signal.async_wait([&](const asio::error_code& ec, int) {
      if (ec || ended) return;
      spdlog::info("SIGHUP: reloading {}", file.path.string());
      process.reload();
      await_reload();
    });
  };
  await_reload();

  relay::raise_open_files_limit();  // as run_main() does for connect and agent
  io.run();
  return forced != exit_ok ? forced : process.exit_code();
}

}  // namespace

void add_up_command(CLI::App& app, action& run) {
  auto f = std::make_shared<up_flags>();
  auto* cmd = app.add_subcommand(
      "up", "Run the tunnels of a tunnels file (docs/TUNNELS.md); SIGHUP reloads it");
  cmd->add_option("-f,--file", f->file, "The tunnels file (TOML)")->required();
  cmd->add_flag("--json", f->json, "Print events as JSON lines");
  cmd->add_option("--log-level", f->log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  cmd->add_option("--control", f->control,
                  "Control socket for tether map (default: $XDG_RUNTIME_DIR/tether/PID.sock, "
                  "else ~/.local/state/tether/run/PID.sock)");
  cmd->callback([f, &run] { run = [f] { return run_up(*f); }; });
}

}  // namespace tether::cli
