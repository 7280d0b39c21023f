#include "client_setup.hpp"

#include <pwd.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "output.hpp"
#include "tether/client/control_path.hpp"
#include "tether/relay/open_files.hpp"
#include "tether/server/token.hpp"

namespace tether::cli {
namespace {

// The local user, the default for ssh:// URLs without one (as with ssh).
std::string local_user() {
  if (const char* u = std::getenv("USER"); u && *u) return u;
  if (const auto* pw = ::getpwuid(::geteuid())) return pw->pw_name;
  throw std::invalid_argument("cannot tell the local user name: give it as ssh://USER@HOST");
}

std::string read_passphrase(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read the passphrase file " + path.string());
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace

std::string server_label(const client::server_url& url) {
  const auto host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  return host + ":" + std::to_string(url.port);
}

found_token find_token(const client::server_settings& s, const std::string& inline_token,
                       const std::string& missing) {
  // Token files are trimmed when read; a token pasted into a variable or a flag often
  // carries a blank or a newline too.
  auto trimmed = [](std::string_view t) {
    const auto blank = " \t\r\n";
    const auto b = t.find_first_not_of(blank);
    if (b == std::string_view::npos) return std::string();
    return std::string(t.substr(b, t.find_last_not_of(blank) - b + 1));
  };
  if (!s.token_file.empty()) {
    // Reading a directory fails with no reason worth showing ("read failed").
    std::error_code ec;
    if (std::filesystem::is_directory(s.token_file, ec))
      throw std::invalid_argument("token file '" + s.token_file.string() +
                                  "' is a directory, not a file holding a token");
    return {server::read_token_file(s.token_file), "file " + s.token_file.string()};
  }
  if (auto t = trimmed(inline_token); !t.empty()) return {t, "--token"};
  if (const char* env = std::getenv("TETHER_TOKEN"))
    if (auto t = trimmed(env); !t.empty()) return {t, "TETHER_TOKEN"};
  throw std::invalid_argument(missing);
}

client::dialer make_dialer(asio::any_io_executor ex, const client::server_settings& s,
                           std::string token) {
  if (s.url.kind == client::scheme::ssh) {
    transport::ssh_options o;
    o.host = s.url.host;
    o.port = s.url.port;
    o.user = s.url.user.empty() ? local_user() : s.url.user;
    for (const auto& i : s.identity_files) {
      if (auto problem = transport::identity_file_problem(i, "identity"); !problem.empty())
        throw std::invalid_argument("identity " + i.string() + ": " + problem);
      o.identity_files.emplace_back(i.string());
    }
    if (!s.passphrase_file.empty()) o.passphrase = read_passphrase(s.passphrase_file);
    o.known_hosts = s.known_hosts.string();
    o.accept_new_host_key = s.accept_new_host_key;
    o.connect_timeout = s.connect_timeout;
    return client::make_ssh_dialer(ex, std::move(o));
  }
  auto o = tls_options_of(s, std::move(token));
  return client::make_tls_dialer(ex, std::move(o));
}

client::tls_dial_options tls_options_of(const client::server_settings& s, std::string token) {
  client::tls_dial_options o;
  o.host = s.url.host;
  o.port = s.url.port;
  o.ca_file = s.ca_file.string();
  o.pin = s.pin;
  o.token = std::move(token);
  o.connect_timeout = s.connect_timeout;
  if (s.max_stream_window != 0) o.session.max_stream_window = s.max_stream_window;
  o.session.lanes = s.lanes;
  return o;
}

client::lane_dialer lane_dialer_of(const client::server_settings& s, std::string token) {
  if (s.url.kind != client::scheme::tls || !s.lanes) return {};
  auto o = tls_options_of(s, std::move(token));
  o.session.bulk_lane = true;
  return [o = std::move(o)](asio::any_io_executor ex) { return client::make_tls_dialer(ex, o); };
}

credential_origin origin_of(const std::string& pin, std::string token_source) {
  return {std::move(token_source), pin.empty() ? "--ca" : "--pin"};
}

int report_dial_failure(const client::dial_outcome& o, const client::server_url& url, bool json,
                        const credential_origin& from) {
  using kind = client::dial_outcome::failure;
  const bool tls = url.kind == client::scheme::tls;
  const auto server = server_label(url);
  if (o.kind == kind::bad_credentials && tls) {
    // The server's own words, when it said more than the code does (escaped by mux).
    std::string m = "authentication failed: token rejected by " + server;
    if (o.error != describe(errc::bad_token)) m += " (" + o.error + ")";
    if (!from.token.empty()) m += "; the token came from " + from.token;
    report_error(json, exit_bad_credentials, "bad_token", m);
    return exit_bad_credentials;
  }
  if (o.kind == kind::bad_credentials) {
    report_error(json, exit_bad_credentials, "bad_credentials", o.error);
    return exit_bad_credentials;
  }
  if (o.kind == kind::untrusted_server) {
    // A certificate for another name is not fixed by another CA: the dialer's words already
    // say which names the certificate is for.
    const bool wrong_name = o.error.starts_with("the server certificate is for");
    report_error(json, exit_untrusted_server, "untrusted_server",
                 !tls || wrong_name
                     ? o.error
                     : o.error + " (server " + server + "; check " + from.trust + ")");
    return exit_untrusted_server;
  }
  if (o.kind == kind::transient)
    report_error(json, exit_failure, "unreachable", o.sentence(server));
  else
    report_error(json, exit_failure, "failed", o.error);
  return exit_failure;
}

std::filesystem::path control_socket_path(const std::string& flag) {
  if (flag.empty()) {
    const auto folder = client::default_control_folder();
    client::prepare_control_folder(folder);
    const auto path = folder / (std::to_string(::getpid()) + ".sock");
    client::clear_stale_socket(path);
    return path;
  }
  const std::filesystem::path path(flag);
  client::check_control_folder(path.has_parent_path() ? path.parent_path()
                                                      : std::filesystem::path("."));
  client::clear_stale_socket(path);
  return path;
}

std::optional<client::control_server> open_control_socket(asio::any_io_executor ex,
                                                          const std::filesystem::path& path,
                                                          bool json) {
  try {
    return std::optional<client::control_server>(std::in_place, std::move(ex), path);
  } catch (const std::exception& e) {
    report_error(json, exit_usage, "usage", e.what());
    return std::nullopt;
  }
}

void report_internal_error(bool json, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    report_error(json, exit_failure, "internal", x.what());
  }
}

void run_main(asio::io_context& io, bool json, int& exit_code,
              std::function<asio::awaitable<void>()> main) {
  // Every connection relayed is a descriptor or two: the soft limit of 1,024 a shell gives
  // would refuse connections long before memory or CPU runs out (the server does the same).
  relay::raise_open_files_limit();
  asio::co_spawn(io, std::move(main), [&io, json, &exit_code](std::exception_ptr e) {
    if (!e) return;
    report_internal_error(json, e);
    exit_code = exit_failure;
    io.stop();
  });
  io.run();
}

}  // namespace tether::cli
