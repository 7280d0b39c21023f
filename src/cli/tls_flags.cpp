#include "tls_flags.hpp"

#include <iostream>

namespace tether::cli {
namespace {

// A day is beyond any sensible connect timeout.
constexpr double max_seconds = 86400;

}  // namespace

void add_tls_options(CLI::App& cmd, tls_flags& f, const std::string& token_what) {
  cmd.add_option("--pin", f.pin,
                 "Trust the server whose key has this fingerprint (sha256:HEX, from `tether "
                 "server --print-fingerprint`) instead of a CA");
  cmd.add_option("--ca", f.ca_file,
                 "CA certificate file to verify the server (default: the system trust store)");
  cmd.add_option("--token-file", f.token_file, "File holding the " + token_what);
  cmd.add_option("--token", f.token,
                 "The " + token_what +
                     " (prefer --token-file or TETHER_TOKEN: command lines are visible to other "
                     "users)");
  cmd.add_option("--connect-timeout", f.connect_timeout_s, "Seconds to connect and handshake")
      ->capture_default_str();
}

client::server_settings tls_settings_of(const tls_flags& f, const client::server_url& url) {
  if (!f.pin.empty() && !f.ca_file.empty())
    throw std::invalid_argument("--pin and --ca: give one (a pinned key is trusted without a CA)");
  if (!(f.connect_timeout_s > 0 && f.connect_timeout_s <= max_seconds))
    throw std::invalid_argument("--connect-timeout: give seconds above 0, at most 86400");
  client::server_settings s;
  s.url = url;
  s.ca_file = f.ca_file;
  s.pin = f.pin;
  s.token_file = f.token_file;
  s.connect_timeout = std::chrono::milliseconds(static_cast<long>(f.connect_timeout_s * 1000));
  return s;
}

found_token tls_token_of(const tls_flags& f, const client::server_settings& s) {
  if (f.token_file.empty() && !f.token.empty())
    std::cerr << "warning: --token puts the token on the command line, where other local "
                 "users can read it (ps, /proc); prefer --token-file FILE or TETHER_TOKEN"
              << std::endl;
  return find_token(s, f.token,
                    "no token: pass --token-file FILE, --token TOKEN or set TETHER_TOKEN");
}

}  // namespace tether::cli
