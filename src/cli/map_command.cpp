#include "map_command.hpp"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>

#include "tether/client/control_client.hpp"
#include "tether/client/control_path.hpp"
#include "tether/client/mapping.hpp"
#include "tether/client/mapping_names.hpp"
#include "tether/printable.hpp"

namespace tether::cli {
namespace {

namespace fs = std::filesystem;
using client::control_errc;
using client::control_op;

struct map_flags {
  std::string control;
  long pid = 0;
  bool json = false;
  double timeout_s = 60;
  // add
  std::vector<std::string> add_args;  // [NAME] SPEC
  bool udp = false;
  bool check = false;
  std::string server;
  // rm
  std::string which;
  bool now = false;
};

// A mistake in how the command was called (or which client it should talk to): exit 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::chrono::milliseconds timeout_of(const map_flags& f) {
  return std::chrono::milliseconds(static_cast<long>(f.timeout_s * 1000));
}

// With several clients running, the user picks one; each is named by what it serves.
std::string describe_clients(const std::vector<client::running_client>& clients) {
  std::string out;
  for (const auto& c : clients) {
    out += "\n  --pid " + std::to_string(c.pid) + "  (" + c.socket.string() + ")";
    try {
      client::control_request info;
      info.op = control_op::info;
      const auto r = client::ask_control(c.socket, info, std::chrono::seconds(2));
      if (r.info) {
        std::string servers;
        for (const auto& s : r.info->servers) servers += (servers.empty() ? "" : ", ") + s;
        out += "  " + printable(servers) + ", " + std::to_string(r.info->mappings) +
               (r.info->mappings == 1 ? " mapping" : " mappings");
      }
    } catch (const std::exception&) {
      // it still listed: the socket is there, only its words are missing
    }
  }
  return out;
}

// The control socket to talk to: --control, --pid, or the only client running.
fs::path find_socket(const map_flags& f) {
  if (!f.control.empty()) {
    client::check_control_socket(f.control);
    return f.control;
  }
  if (f.pid != 0) {
    const auto path = client::default_control_socket(f.pid);
    client::check_control_socket(path);
    return path;
  }
  const auto folder = client::default_control_folder();
  const auto clients = client::find_running_clients(folder);
  if (clients.empty())
    throw std::runtime_error("no running tether client (no control socket in '" + folder.string() +
                             "'); start one with tether connect, or give --control PATH");
  if (clients.size() > 1)
    throw usage_error(
        "several tether clients are running; pick one with --pid PID or "
        "--control PATH:" +
        describe_clients(clients));
  client::check_control_socket(clients.front().socket);
  return clients.front().socket;
}

std::string bytes_text(std::uint64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n);
  int u = -1;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string target_text(const client::mapping_status& m) {
  const auto device = m.device.find(':') != std::string::npos ? "[" + m.device + "]" : m.device;
  return device + ":" + std::to_string(m.device_port);
}

std::string state_text(const client::mapping_status& m) {
  switch (m.state) {
    case client::mapping_state::listening:
      return "listening";
    case client::mapping_state::session_down:
      return "session down";
    case client::mapping_state::failed:
      return "failed: " + m.error;
  }
  return "";
}

// An aligned table; the last column (the state, which may be long) is not padded.
void print_table(const std::vector<client::mapping_status>& all) {
  if (all.empty()) {
    std::cout << "no mappings" << std::endl;
    return;
  }
  std::set<std::string> servers;
  for (const auto& m : all) servers.insert(m.server);
  const bool show_server = servers.size() > 1;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"NAME"};
  if (show_server) head.push_back("SERVER");
  for (const char* h : {"LOCAL", "TARGET", "PROTO", "CONNS", "OUT", "IN", "SINCE", "STATE"})
    head.push_back(h);
  rows.push_back(head);
  for (const auto& m : all) {
    std::vector<std::string> row = {m.name};
    if (show_server) row.push_back(m.server);
    row.push_back(m.local);
    row.push_back(target_text(m));
    row.push_back(mux::protocol_name(m.proto));
    row.push_back(std::to_string(m.connections));
    row.push_back(bytes_text(m.bytes_out));
    row.push_back(bytes_text(m.bytes_in));
    row.push_back(client::iso8601_utc(m.since));
    row.push_back(state_text(m));
    for (auto& cell : row) cell = printable(cell);  // words from the server among them
    rows.push_back(std::move(row));
  }
  std::vector<std::size_t> width(head.size(), 0);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  // Numbers are right-aligned so that their digits line up.
  const std::size_t first_number = show_server ? 5 : 4;
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (i + 1 == r.size()) {
        line += r[i];
        break;
      }
      const auto pad = std::string(width[i] - r[i].size(), ' ');
      const bool number = i >= first_number && i < first_number + 3;
      line += number ? pad + r[i] : r[i] + pad;
      line += "  ";
    }
    std::cout << line << "\n";
  }
  std::cout.flush();
}

client::control_request request_of(const map_flags& f, control_op op) {
  client::control_request req;
  req.op = op;
  if (op == control_op::add) {
    req.proto = f.udp ? mux::protocol::udp : mux::protocol::tcp;
    req.spec = f.add_args.back();
    if (f.add_args.size() == 2) req.name = f.add_args.front();
    // Checked here too, so that a typo is a usage error even with no client running.
    auto m = client::parse_mapping(req.spec, req.proto);
    if (!m) throw usage_error(m.message());
    if (!req.name.empty())
      if (auto n = client::check_mapping_name(req.name); !n) throw usage_error(n.message());
    req.check = f.check;
    req.server = f.server;
  } else if (op == control_op::rm) {
    req.mapping = f.which;
    req.now = f.now;
  }
  return req;
}

void print_reply(const map_flags& f, control_op op, const client::control_reply& r) {
  if (op == control_op::ls) {
    if (f.json)
      std::cout << client::format_mappings_json(r.mappings) << std::endl;
    else
      print_table(r.mappings);
    return;
  }
  if (!r.mapping) return;
  const auto& m = *r.mapping;
  if (f.json) {
    std::cout << client::format_mapping_json(m) << std::endl;
  } else if (op == control_op::add) {
    std::cout << m.local << std::endl;  // what a script needs: where to connect
  } else {
    std::string tail;
    if (m.connections > 0)
      tail = "; " + std::to_string(m.connections) +
             (m.connections == 1 ? " connection " : " connections ") +
             (f.now ? "reset" : "left to drain");
    std::cout << "removed " << printable(m.name) << " (" << m.local << " -> "
              << printable(target_text(m)) << ")" << tail << std::endl;
  }
}

int run_map(const map_flags& f, control_op op) {
  try {
    const auto req = request_of(f, op);
    const auto socket = find_socket(f);
    const auto reply = client::ask_control(socket, req, timeout_of(f));
    if (reply.failure) {
      std::cerr << "error: " << printable(reply.failure.message) << std::endl;
      const bool usage = reply.failure.code == control_errc::bad_spec ||
                         reply.failure.code == control_errc::bad_request ||
                         reply.failure.code == control_errc::unknown_server;
      return usage ? exit_usage : exit_failure;
    }
    print_reply(f, op, reply);
    return exit_ok;
  } catch (const usage_error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_usage;
  } catch (const client::control_path_error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_usage;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_failure;
  }
}

void add_common(CLI::App* cmd, const std::shared_ptr<map_flags>& f) {
  auto* control = cmd->add_option("--control", f->control,
                                  "The client's control socket (default: the only client "
                                  "running, found in the control folder)");
  auto* pid = cmd->add_option("--pid", f->pid, "The process id of the client to talk to");
  control->excludes(pid);
  cmd->add_flag("--json", f->json, "Print JSON instead of text");
  cmd->add_option("--timeout", f->timeout_s, "Seconds to wait for the client's answer")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
}

}  // namespace

void add_map_command(CLI::App& app, action& run) {
  auto f = std::make_shared<map_flags>();
  auto* map = app.add_subcommand(
      "map", "List, add and remove the port mappings of a running tether connect");
  map->require_subcommand(1);

  auto* ls = map->add_subcommand("ls", "List every mapping: address, target, state, traffic");
  add_common(ls, f);
  ls->callback([f, &run] { run = [f] { return run_map(*f, control_op::ls); }; });

  auto* add = map->add_subcommand(
      "add",
      "Listen on a new local port now; prints the bound address (exit 0 once it "
      "listens)");
  add->add_option("mapping", f->add_args,
                  "[NAME] [BIND:]LPORT:DEVICE:DPORT (LPORT 0: any "
                  "free port)")
      ->required()
      ->expected(1, 2);
  add->add_flag("--udp", f->udp, "A UDP mapping (like -U) instead of TCP");
  add->add_flag("--check", f->check,
                "Open one stream to the target first and fail if the server or the device "
                "refuses it (for TCP the device sees one connection that closes at once)");
  add->add_option("--server", f->server,
                  "HOST:PORT of the server to add it to, when the client has several");
  add_common(add, f);
  add->callback([f, &run] { run = [f] { return run_map(*f, control_op::add); }; });

  auto* rm = map->add_subcommand(
      "rm", "Stop listening on a mapping; open connections drain (or are reset with --now)");
  rm->add_option("mapping", f->which, "NAME, LOCAL address (127.0.0.1:2222) or local port")
      ->required();
  rm->add_flag("--now", f->now, "Reset open connections instead of letting them finish");
  add_common(rm, f);
  rm->callback([f, &run] { run = [f] { return run_map(*f, control_op::rm); }; });
}

}  // namespace tether::cli
