#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>

#include "api_setup.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tether/server/server.hpp"
#include "tether/server/worker_pool.hpp"
#include "tether/transport/dev_pki.hpp"
#include "tether/transport/private_dir.hpp"
#include "tether/transport/tls.hpp"

namespace tether::cli {
namespace {

namespace fs = std::filesystem;

struct server_flags {
  std::string config_file;
  bool dev = false;
  std::string state_dir = ".tether-dev";
  std::string listen;
  std::vector<std::string> devices;  // ID=ADDRESS
  std::vector<std::string> dev_hosts;  // more names for the dev certificate
  int workers = -1;                    // -1: the config's (default: one per CPU)
  bool print_fingerprint = false;
  bool json = false;
  std::string log_level = "info";
};

// The dev token: made once, kept in the state directory, readable only by its owner. The
// file is never a symlink: neither read through one nor written through one.
std::string dev_token(const fs::path& file) {
  if (transport::check_private_file(file, true)) return server::read_token_file(file);
  const auto token = server::generate_token();
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + file.string() + ": " + std::strerror(errno));
  const std::string line = token + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  if (::close(fd) != 0 || !written)
    throw std::runtime_error("cannot write " + file.string() + ": " + std::strerror(errno));
  return token;
}

// --listen overrides the config's address, --workers its number of workers.
void apply_flags(server::server_config& config, const server_flags& f) {
  if (f.workers >= 0) config.workers = static_cast<std::uint32_t>(f.workers);
  if (f.listen.empty()) return;
  auto ep = server::parse_endpoint(f.listen);
  if (!ep) throw server::config_error("--listen: " + ep.message());
  config.listen = *ep;
}

// The workers a config asks for: 0 means one per CPU.
std::size_t worker_count(const server::server_config& config) {
  return config.workers != 0 ? config.workers : server::worker_pool::default_count();
}

// A host a client can be told to dial: not a wildcard address.
bool dialable(const std::string& host) {
  return !host.empty() && host != "0.0.0.0" && host != "::" && host != "*";
}

// `--dev` also serves the HTTP API and its dashboard, in plain HTTP on a loopback port of
// its own, with a key (kept beside the token) allowed everything, live sessions included.
void enable_dev_api(server::server_config& c, const fs::path& dir) {
  c.api.listen = server::endpoint{"127.0.0.1", 0};
  c.api.tls = false;
  c.api.state_dir = dir;
  auto rule = server::parse_acl_rule("*");
  server::credential key;
  key.name = "dev";
  key.token_sha256 = server::sha256(dev_token(dir / "api_key"));
  key.allow = server::acl({rule.value()});
  key.see_sessions = true;
  c.api.keys.push_back(std::move(key));
}

// `--dev`: a config made on the spot, with a throwaway PKI and a token allowed everything.
server::server_config dev_config(const server_flags& f, fs::path& ca, fs::path& token_file) {
  server::server_config c;
  c.listen = {"127.0.0.1", 7443};
  apply_flags(c, f);
  // The certificate covers the address clients are told to dial, and any --dev-host.
  std::vector<std::string> names = f.dev_hosts;
  if (dialable(c.listen.host)) names.push_back(c.listen.host);
  const fs::path dir = fs::absolute(f.state_dir);
  const auto pki = transport::ensure_dev_pki(dir, names);  // makes the directory, mode 0700
  ca = pki.ca_cert;
  token_file = dir / "token";
  const auto token = dev_token(token_file);

  c.cert = pki.server_cert;
  c.key = pki.server_key;
  auto rule = server::parse_acl_rule("*");
  c.credentials.push_back({"dev", server::sha256(token), server::acl({rule.value()})});
  enable_dev_api(c, dir);
  for (const auto& d : f.devices) {
    const auto eq = d.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == d.size())
      throw server::config_error("--device '" + d + "': expected ID=ADDRESS");
    server::device dev{d.substr(0, eq), d.substr(eq + 1)};
    if (!server::is_valid_device_id(dev.id))
      throw server::config_error("--device '" + d + "': device id must be 1-64 of [A-Za-z0-9._-]");
    for (const auto& other : c.devices)
      if (other.id == dev.id) throw server::config_error("--device '" + d + "': duplicate id");
    c.devices.push_back(std::move(dev));
  }
  return c;
}

std::string connect_host(const asio::ip::tcp::endpoint& ep) {
  const auto a = ep.address();
  if (a.is_unspecified()) return a.is_v6() ? "[::1]" : "127.0.0.1";
  return a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
}

// The line `--dev` prints: a complete `tether connect` for this server, with one -L per
// device (port 22, the usual reason to reach a device; local port 0 never collides). A
// listen address given as a name is dialled by that name, which the certificate covers.
std::string dev_command(const server::server_config& c, const asio::ip::tcp::endpoint& bound,
                        const fs::path& ca, const fs::path& token_file) {
  asio::error_code not_ip;
  asio::ip::make_address(c.listen.host, not_ip);
  const auto host = dialable(c.listen.host) && not_ip ? c.listen.host : connect_host(bound);
  std::string command = "tether connect tls://" + host + ":" + std::to_string(bound.port()) +
                        " --ca " + ca.string() + " --token-file " + token_file.string();
  for (const auto& d : c.devices) command += " -L 0:" + d.id + ":22";
  if (c.devices.empty()) command += " -L 0:DEVICE:22";
  return command;
}

// The config from --config as at startup.
server::server_config load_config(const server_flags& f) {
  auto config = server::load_server_config(f.config_file);
  apply_flags(config, f);
  return config;
}

// SIGHUP: the config file is read again and applied; one with errors changes nothing.
void watch_for_reload(asio::signal_set& hup, server::server& srv, const server_flags& f,
                      api_runtime* api) {
  hup.async_wait([&hup, &srv, &f, api](const asio::error_code& ec, int) {
    if (ec) return;
    if (f.dev) {
      spdlog::warn("SIGHUP: --dev has no config file to reload");
    } else {
      try {
        const auto next = load_config(f);
        auto notes = srv.reload(next);
        if (api) api->reload(next.api, notes);
        for (std::size_t i = 0; i + 1 < notes.size(); ++i) spdlog::warn("reload: {}", notes[i]);
        spdlog::info("config reloaded from {}: {}", f.config_file, notes.back());
        print_event(f.json, {{"event", "reloaded"}, {"config", f.config_file}},
                    "reloaded " + f.config_file);
      } catch (const std::exception& e) {
        spdlog::error("config reload failed, the running config stays: {}", e.what());
        print_event(f.json,
                    {{"event", "reload_failed"}, {"config", f.config_file}, {"message", e.what()}},
                    std::string("reload failed: ") + e.what());
      }
    }
    watch_for_reload(hup, srv, f, api);
  });
}

int run_server(const server_flags& f) {
  setup_logging(f.log_level);
  server::server_config config;
  fs::path ca, token_file;
  try {
    config = f.dev ? dev_config(f, ca, token_file) : load_config(f);
  } catch (const std::invalid_argument& e) {  // --dev-host: neither a host name nor an IP
    std::cerr << "error: --dev-host: " << e.what() << std::endl;
    return exit_usage;
  } catch (const server::config_error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_usage;
  } catch (const std::runtime_error& e) {  // --dev: the state directory
    std::cerr << "error: --state-dir: " << e.what() << std::endl;
    return exit_usage;
  }

  if (f.print_fingerprint) {
    try {
      std::cout << transport::public_key_pin(config.cert) << std::endl;
      return exit_ok;
    } catch (const std::runtime_error& e) {
      std::cerr << "error: " << e.what() << std::endl;
      return exit_failure;
    }
  }

  // Worker 0 is this thread: the signals, the acceptor and the server's control run here,
  // beside the sessions it is given; the other workers have threads of their own.
  server::worker_pool workers(worker_count(config));
  auto& io = workers.context(0);
  // Signals are caught before the ready line is printed: a supervisor may stop us at once.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  asio::signal_set hup(io, SIGHUP);
  asio::steady_timer last_resort(io);
  server::server srv(workers, config);
  // Agents come and go on any worker: one event line at a time.
  srv.on_agent_change([json = f.json, lock = std::make_shared<std::mutex>()](
                          const server::agent_event& e) {
    const bool online = e.what == server::agent_event::kind::online;
    std::lock_guard hold(*lock);
    print_event(json,
                {{"event", "agent"},
                 {"state", online ? "online" : "offline"},
                 {"device", e.device},
                 {"peer", e.peer}},
                "agent for " + e.device + (online ? " online from " : " offline, was at ") +
                    e.peer);
  });
  spdlog::info("{} workers{}", workers.size(), config.workers == 0 ? " (one per CPU)" : "");
  const auto bound = srv.listen();
  const std::string local = connect_host(bound) + ":" + std::to_string(bound.port());
  print_event(f.json, {{"event", "listening"}, {"proto", "tls"}, {"local", local}},
              "listening on " + local);
  if (f.dev) {
    const auto command = dev_command(config, bound, ca, token_file);
    const auto pin = transport::public_key_pin(config.cert);
    print_event(f.json,
                {{"event", "dev"},
                 {"command", command},
                 {"ca", ca.string()},
                 {"token_file", token_file.string()},
                 {"pin", pin}},
                command);
    spdlog::info("clients may trust this server by its key instead of --ca: --pin {}", pin);
    if (config.devices.empty())
      spdlog::warn("no --device given: add --device ID=ADDRESS for each device to reach, and "
                   "use its id in place of DEVICE");
  }

  std::unique_ptr<api_runtime> api;
  try {
    api = start_api(io, srv, config);
  } catch (const std::exception& e) {
    std::cerr << "error: the HTTP API: " << e.what() << std::endl;
    return exit_failure;
  }
  if (api) {
    const auto dashboard = api->url() + "/";
    nlohmann::ordered_json ev{{"event", "api"}, {"url", api->url()}, {"dashboard", dashboard}};
    if (f.dev) ev["api_key_file"] = (fs::absolute(f.state_dir) / "api_key").string();
    print_event(f.json, ev,
                "API on " + api->url() + "; dashboard at " + dashboard +
                    (f.dev ? " (log in with the key in " +
                                 (fs::absolute(f.state_dir) / "api_key").string() + ")"
                           : ""));
  }

  signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec) return;
    if (api) api->close();
    spdlog::info("signal {}: stopping (grace {} ms)", sig, config.grace_period.count());
    hup.cancel();
    asio::co_spawn(io, srv.shutdown(), [&](std::exception_ptr) {
      signals.cancel();
      last_resort.cancel();
      workers.release();  // each worker ends once the tasks of its sessions have ended
    });
    // A second signal cuts every session now. Their tasks still run to their end, so
    // nothing is destroyed under a pending operation; the timer is a last resort.
    signals.async_wait([&](const asio::error_code& ec2, int) {
      if (ec2) return;
      srv.abort();
      last_resort.expires_after(std::chrono::seconds(5));
      last_resort.async_wait([&](const asio::error_code& tec) {
        if (!tec) workers.stop();
      });
    });
  });
  watch_for_reload(hup, srv, f, api.get());
  asio::co_spawn(io, srv.run(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  workers.run();
  return exit_ok;
}

}  // namespace

void add_server_command(CLI::App& app, action& run) {
  auto f = std::make_shared<server_flags>();
  auto* cmd = app.add_subcommand("server", "Run the tunnel server");
  auto* config = cmd->add_option("--config,-c", f->config_file, "Server config file (TOML)")
                     ->check(CLI::ExistingFile);
  auto* dev = cmd->add_flag("--dev", f->dev,
                            "Development mode: make a CA, a certificate and a token in "
                            "--state-dir and allow that token everything");
  config->excludes(dev);
  cmd->add_option("--state-dir", f->state_dir, "Where --dev keeps its CA, keys and token")
      ->capture_default_str();
  cmd->add_option("--listen", f->listen,
                  "Address to listen on, HOST:PORT (overrides the config; --dev default "
                  "127.0.0.1:7443)");
  cmd->add_option("--workers", f->workers,
                  "Event-loop threads to spread sessions over (0: one per CPU; overrides the "
                  "config's `workers`; needs a restart to change)")
      ->check(CLI::Range(0, static_cast<int>(server::max_workers)));
  cmd->add_option("--device", f->devices, "With --dev: a device ID=ADDRESS (repeatable)");
  cmd->add_option("--dev-host", f->dev_hosts,
                  "With --dev: one more host name or IP the dev certificate covers (repeatable; "
                  "the --listen host is always covered)");
  cmd->add_flag("--print-fingerprint", f->print_fingerprint,
                "Print the pin of the server's certificate key (sha256:HEX, for `tether "
                "connect --pin`) and exit");
  cmd->add_flag("--json", f->json, "Print events as JSON lines");
  cmd->add_option("--log-level", f->log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  cmd->callback([f, &run] {
    // Said as every other error is ("error: ..."): a CLI11 error would print it bare.
    if (!f->dev && f->config_file.empty()) {
      run = [] {
        std::cerr << "error: tether server needs --config FILE (a server config) or --dev (a "
                     "throwaway development server)"
                  << std::endl;
        return exit_usage;
      };
      return;
    }
    run = [f] { return run_server(*f); };
  });
}

}  // namespace tether::cli
