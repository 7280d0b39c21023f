#pragma once
// The options every command that talks to a tether server over TLS takes alike (--ca, --pin,
// --token-file, --token, --connect-timeout): registered, checked and turned into settings in
// one place, so they read and fail the same way everywhere.

#include <CLI/CLI.hpp>
#include <string>

#include "client_setup.hpp"
#include "tether/client/tunnels_file.hpp"

namespace tether::cli {

struct tls_flags {
  std::string ca_file;
  std::string pin;  // sha256:HEX of the server's key, instead of a CA
  std::string token_file;
  std::string token;
  double connect_timeout_s = 10;
};

/// Registers the options on `cmd` (not the URL: its help differs between commands).
void add_tls_options(CLI::App& cmd, tls_flags& f, const std::string& token_what = "access token");

/// The server settings for `url` with these flags. Throws std::invalid_argument naming the
/// flag: --pin with --ca, a timeout out of range.
client::server_settings tls_settings_of(const tls_flags& f, const client::server_url& url);

/// The token (--token-file, then --token, then TETHER_TOKEN) and its source; warns on stderr
/// when it is on the command line. Throws as find_token does.
found_token tls_token_of(const tls_flags& f, const client::server_settings& s);

}  // namespace tether::cli
