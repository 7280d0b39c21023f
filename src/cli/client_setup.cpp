#include "client_setup.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "tether/client/control_path.hpp"
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

std::string find_token(const client::server_settings& s, const std::string& inline_token,
                       const std::string& missing) {
  if (!s.token_file.empty()) return server::read_token_file(s.token_file);
  if (!inline_token.empty()) return inline_token;
  if (const char* env = std::getenv("TETHER_TOKEN"); env && *env) return env;
  throw std::invalid_argument(missing);
}

client::dialer make_dialer(asio::any_io_executor ex, const client::server_settings& s,
                           std::string token) {
  if (s.url.kind == client::scheme::ssh) {
    transport::ssh_options o;
    o.host = s.url.host;
    o.port = s.url.port;
    o.user = s.url.user.empty() ? local_user() : s.url.user;
    for (const auto& i : s.identity_files) o.identity_files.emplace_back(i.string());
    if (!s.passphrase_file.empty()) o.passphrase = read_passphrase(s.passphrase_file);
    o.known_hosts = s.known_hosts.string();
    o.accept_new_host_key = s.accept_new_host_key;
    o.connect_timeout = s.connect_timeout;
    return client::make_ssh_dialer(ex, std::move(o));
  }
  client::tls_dial_options o;
  o.host = s.url.host;
  o.port = s.url.port;
  o.ca_file = s.ca_file.string();
  o.pin = s.pin;
  o.token = std::move(token);
  o.connect_timeout = s.connect_timeout;
  return client::make_tls_dialer(ex, std::move(o));
}

int report_dial_failure(const client::dial_outcome& o, const client::server_url& url) {
  using kind = client::dial_outcome::failure;
  const bool tls = url.kind == client::scheme::tls;
  const auto server = server_label(url);
  if (o.kind == kind::bad_credentials && tls) {
    // The server's own words, when it said more than the code does (escaped by mux).
    std::cerr << "error: authentication failed: token rejected by " << server;
    if (o.error != describe(errc::bad_token)) std::cerr << " (" << o.error << ")";
    std::cerr << std::endl;
  } else if (o.kind == kind::untrusted_server && tls) {
    std::cerr << "error: " << o.error << " (server " << server << "; check --ca)" << std::endl;
  } else if (o.kind == kind::transient) {
    std::cerr << "error: cannot reach " << server << ": " << o.error << std::endl;
  } else {
    std::cerr << "error: " << o.error << std::endl;
  }
  return o.kind == kind::bad_credentials    ? exit_bad_credentials
         : o.kind == kind::untrusted_server ? exit_untrusted_server
                                            : exit_failure;
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

}  // namespace tether::cli
