#pragma once
// What `connect`, `connect --stdio` and `up` do alike before and after a tunnel: turn a
// server's settings into a dialer, find and open the control socket, run the event loop,
// and put a dial failure that retrying cannot fix into one line on stderr and an exit code.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "tether/client/control_server.hpp"
#include "tether/client/dialer.hpp"
#include "tether/client/tunnels_file.hpp"

namespace tether::cli {

/// "host:port" ("[::1]:7443"): how events and messages name a server.
std::string server_label(const client::server_url& url);

/// A token and where it came from, for messages: "file /etc/tether/token", "--token",
/// "TETHER_TOKEN".
struct found_token {
  std::string token;
  std::string source;
};

/// The token for a tls:// server: the token file's, else `inline_token`, else TETHER_TOKEN;
/// blanks around it are trimmed wherever it came from. Throws std::invalid_argument with
/// `missing` when there is none or naming a token file that is a directory,
/// std::runtime_error when the file cannot be read.
found_token find_token(const client::server_settings& s, const std::string& inline_token,
                       const std::string& missing);

/// A dialer for `s` (tls:// with `token`, or ssh://). Throws std::invalid_argument or
/// std::runtime_error (a CA, key or passphrase file that cannot be used: an identity file
/// is checked here, before any dial).
client::dialer make_dialer(asio::any_io_executor ex, const client::server_settings& s,
                           std::string token);

/// The dialer of the bulk lane (docs/PROTOCOL.md, "Lanes") for `s`: empty for ssh:// or
/// when lanes are off.
client::lane_dialer lane_dialer_of(const client::server_settings& s, std::string token);

/// The options of a tls:// dialer for `s` with `token` (a client's; an agent sets its role
/// and stream handler on them).
client::tls_dial_options tls_options_of(const client::server_settings& s, std::string token);

/// Where a client's token and its trust in the server came from: what a failed dial's
/// message tells the user to check.
struct credential_origin {
  std::string token;           // found_token::source; empty for ssh://
  std::string trust = "--ca";  // what decides which server is trusted: "--ca", "--pin", or
                               // a tunnels file's setting ("ca in tunnels.toml")
};

/// The origin for the TLS flags of a command: --pin when it was given, else --ca.
credential_origin origin_of(const std::string& pin, std::string token_source);

/// Reports a failed dial as a fatal error (report_error: one "error: ..." line, and an
/// error event with `json`) and returns its exit code: exit_bad_credentials,
/// exit_untrusted_server or exit_failure. A rejected token names where it came from, an
/// untrusted server what to check (`from`): every command reports a dial the same way.
int report_dial_failure(const client::dial_outcome& o, const client::server_url& url, bool json,
                        const credential_origin& from = {});

/// Where a client's control socket goes: `flag` (--control) if given, else the default
/// folder's <pid>.sock; its folder checked and a stale socket cleared. Throws
/// control_path_error or std::runtime_error: usage errors.
std::filesystem::path control_socket_path(const std::string& flag);

/// The control socket bound at `path`, or nothing once the reason it cannot be is reported
/// as a usage error: the path comes from the command line or the user's folders.
std::optional<client::control_server> open_control_socket(asio::any_io_executor ex,
                                                          const std::filesystem::path& path,
                                                          bool json);

/// An exception that escaped a command's coroutine is a bug, not a failure the user can
/// act on: it is reported as an internal error (report_error), for scripts too.
void report_internal_error(bool json, std::exception_ptr e);

/// Spawns `main` on `io` and runs `io` until it has no work left or is stopped. An exception
/// escaping `main` is reported as an internal error, sets `exit_code` to exit_failure and
/// stops `io`: what was left running cannot be trusted to end.
void run_main(asio::io_context& io, bool json, int& exit_code,
              std::function<asio::awaitable<void>()> main);

}  // namespace tether::cli
