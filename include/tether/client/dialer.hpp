#pragma once
// Making a tunnel session: the first one and every reconnect go through a dialer.

#include <asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "tether/mux/session.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/transport/ssh.hpp"

namespace tether::client {

struct dial_outcome {
  std::shared_ptr<mux::tunnel> tunnel;  // set on success
  std::string error;                    // what went wrong, in plain words
  // untrusted_server: TLS certificate verification or SSH host key check failed.
  enum class failure { none, transient, bad_credentials, untrusted_server, fatal } kind =
      failure::none;
  // Something answered at the address, but not as a tether server does (it is not a TLS
  // server, or does not speak tether's protocol): `error` says what it did, as a sentence
  // whose subject is the server ("is not a TLS server (it sent 'SSH-2.0-...')").
  bool answered = false;

  /// The failure in one sentence naming `server` ("host:port") once: "cannot reach SERVER:
  /// ERROR", or "SERVER ERROR" when something answered there.
  std::string sentence(const std::string& server) const {
    return answered ? server + " " + error : "cannot reach " + server + ": " + error;
  }
};

using dialer = std::function<asio::awaitable<dial_outcome>()>;

/// Makes a dialer for a given executor: the bulk lane's (docs/PROTOCOL.md, "Lanes") dials
/// the same server from a thread of its own.
using lane_dialer = std::function<dialer(asio::any_io_executor)>;

struct tls_dial_options {
  std::string host;
  std::uint16_t port = 7443;
  std::string ca_file;  // empty: the system trust store
  std::string pin;      // "sha256:HEX" of the server's key: trusted instead of a CA
  std::string token;
  std::chrono::milliseconds connect_timeout{10000};
  mux::session_settings session;
  // An agent (`tether agent`) says so in its HELLO and takes the streams the server opens.
  wire::role role = wire::role::client;
  mux::session::open_handler on_open;
};

/// A dialer for tls:// servers: TLS with verification, then HELLO with the token.
/// Throws std::runtime_error at construction if the CA file cannot be loaded,
/// std::invalid_argument for a malformed pin.
dialer make_tls_dialer(asio::any_io_executor ex, tls_dial_options options);

/// A dialer for ssh:// servers: an SSH session whose channels are direct-tcpip forwards.
dialer make_ssh_dialer(asio::any_io_executor ex, transport::ssh_options options);

}  // namespace tether::client
