#pragma once
// `tether connect URL --stdio TARGET`: the process's stdin and stdout become one stream to
// TARGET, for OpenSSH's ProxyCommand. connect_command.cpp checks the flags and builds the
// dialer, then hands over here.

#include <asio/io_context.hpp>

#include "client_setup.hpp"
#include "tether/client/dialer.hpp"
#include "tether/client/url.hpp"
#include "tether/mux/tunnel.hpp"

namespace tether::cli {

/// Dials `url` once with `dial` (which runs on `io`), opens one stream to `target` and
/// relays stdin and stdout to it until it ends. Nothing but the stream's bytes reaches
/// stdout: while this runs, fds 0 and 1 point at /dev/null and the relay uses private
/// duplicates. Errors go to stderr as one "error: ..." line. SIGINT, SIGTERM and SIGHUP
/// (which ssh sends its ProxyCommand on the way out) end the stream; a second one ends the
/// process's loop at once.
///
/// Returns the exit code: exit_ok when the stream ended cleanly or a signal ended it;
/// exit_bad_credentials, exit_untrusted_server as with connect; exit_failure for the rest
/// (server unreachable, the stream refused, reset or cut by a lost session, a local I/O
/// error). Never retries. A failed dial is reported as connect reports it, naming where the
/// token and the trust came from (`from`).
int run_stdio(asio::io_context& io, client::dialer dial, const client::server_url& url,
              mux::target target, const credential_origin& from);

}  // namespace tether::cli
