#pragma once
// The SSH transport: one SSH session (libssh2, non-blocking, driven by Asio) offered as a
// mux::tunnel whose channels are SSH "direct-tcpip" channels. Works against a stock OpenSSH
// server or any SSH tunnel host that allows TCP forwarding.
//
// Threading: a session and its channels live on the executor given to connect_ssh(), which
// must be single-threaded (an io_context run by one thread, or a strand). Call every
// tunnel and channel function from coroutines running on that executor.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/mux/tunnel.hpp"
#include "tether/result.hpp"

namespace tether::transport {

struct ssh_options {
  std::string host;
  std::uint16_t port = 22;
  std::string user;
  /// Private key files (OpenSSH format Ed25519 or ECDSA; PEM works too), tried in order.
  /// Empty: authenticate with the keys of the ssh-agent at SSH_AUTH_SOCK.
  std::vector<std::filesystem::path> identity_files;
  /// Passphrase for encrypted key files. Unset: the TETHER_SSH_PASSPHRASE environment
  /// variable, if set.
  std::optional<std::string> passphrase;
  /// OpenSSH known_hosts file. Empty: $HOME/.ssh/known_hosts.
  std::filesystem::path known_hosts;
  /// Trust and record the key of a host that known_hosts does not list (OpenSSH's
  /// accept-new). A key that differs from a recorded one is refused regardless.
  bool accept_new_host_key = false;
  /// Bounds TCP connect, SSH handshake and authentication together.
  std::chrono::milliseconds connect_timeout{10000};
  /// Interval of SSH keepalive messages; 0 turns them off. A peer that stops acknowledging
  /// for four intervals (at least 60 s) ends the session.
  std::chrono::seconds keepalive{15};
  /// Bounds one channel open (the server's answer to direct-tcpip).
  std::chrono::milliseconds open_timeout{30000};
  /// Receive window per channel; larger keeps fast links busy over long round trips.
  std::uint32_t channel_window = 2 * 1024 * 1024;
};

/// Why `file` cannot be a private key file for ssh_options::identity_files, in words that
/// follow its name: "the file does not exist", "is a directory, not a private key file",
/// "is a public key; -i wants the private key, e.g. ~/.ssh/id_ed25519" (`option` names the
/// flag or setting that gave the file); empty when it may be one (whether the server takes
/// it shows only when authenticating). Reads at most the first 4 KiB of the file. Callers
/// check key files with it before dialling: a wrong file is a mistake of the command line.
std::string identity_file_problem(const std::filesystem::path& file, std::string_view option);

/// Connects to opts.host:opts.port, performs the SSH handshake, checks the host key against
/// known_hosts and authenticates. Completes with the tunnel, or with an error whose message
/// is fit to show the user ("host key for [h]:p is not known (ED25519 key SHA256:...); pass
/// --accept-new-host-key to trust it", "HOST KEY CHANGED ...", "authentication failed for
/// user u: ..."). Failures to reach the server ("connection refused", "timed out connecting
/// (after 10000 ms)", "SSH handshake failed: ...") do not name it: the caller says
/// "cannot reach h:p: " in front, as it does for a tls:// server.
///
/// The tunnel's open(target) opens a direct-tcpip channel to target.device:target.port and
/// fails with errc::ssh_forwarding_denied when the server refuses to forward (prohibited by
/// its configuration), errc::refused when it could not connect, errc::timed_out,
/// errc::unsupported for UDP, errc::session_lost once the session ended. Opens are
/// answered one after another (libssh2 keeps one open in flight per session).
/// wait_closed() completes when the session ends (server gone, keepalive failure, close()).
/// last_open_error() gives the server's reason for the last refused open ("Channel open
/// failure (administratively prohibited)"), or why the session ended.
/// Destroying the tunnel ends the session.
asio::awaitable<result<std::shared_ptr<mux::tunnel>>> connect_ssh(asio::any_io_executor ex,
                                                                  ssh_options opts);

}  // namespace tether::transport
