#pragma once
// TLS connections as mux::byte_stream. OpenSSL is driven through in-memory BIOs, so a 512 KiB
// write becomes many TLS records but only one socket write, and a read pulls up to 256 KiB
// of ciphertext per syscall. TLS 1.2 minimum, 1.3 preferred, AES-GCM first, no
// renegotiation, no compression.
//
// Kept free of OpenSSL and asio::ssl headers on purpose: this header is included widely.

#include <asio/awaitable.hpp>
#include <asio/error_code.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "tether/mux/byte_stream.hpp"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace tether::transport {

struct tls_client_config {
  std::string ca_file;      // PEM bundle of trusted CAs; empty: the system trust store
  std::string server_name;  // host name or IP to verify and send as SNI; empty: the dialed host
  // "sha256:HEX" of the server's public key (public_key_pin()): when set, a server with
  // exactly that key is trusted and nothing else is checked; ca_file is not used.
  std::string pin;
};

/// Client-side TLS settings and trust anchors, shared by every dial. Streams keep what they
/// need of it alive, so it may be destroyed before them. Not thread-safe to mutate; there is
/// nothing to mutate after construction.
class tls_client_context {
 public:
  /// Throws std::runtime_error naming the file if the CA file cannot be loaded, and
  /// std::invalid_argument for a pin that is not "sha256:" and 64 hex digits.
  explicit tls_client_context(const tls_client_config& config);

  const tls_client_config& config() const noexcept { return config_; }
  ssl_ctx_st* native_handle() const noexcept { return ctx_.get(); }

 private:
  tls_client_config config_;
  std::shared_ptr<ssl_ctx_st> ctx_;
};

/// The pin of the first certificate in a PEM file: "sha256:" and the SHA-256 of its public
/// key (SubjectPublicKeyInfo), in hex. Throws std::runtime_error naming the file.
std::string public_key_pin(const std::filesystem::path& cert_pem);

/// Why a server's certificate chain and key cannot be used, for whoever wrote them in the
/// config: the setting to fix ("cert" or "key") and what is wrong with it, in plain words
/// ("'server.pem' is a certificate, not a private key").
struct server_files_problem {
  std::string setting;
  std::string why;
};

/// Loads `cert` and `key` as tls_server_context would, and says what is wrong if they would
/// not serve: missing, unreadable, not PEM, the one given as the other, a key that needs a
/// passphrase, or a key that does not match the certificate.
std::optional<server_files_problem> check_server_files(const std::filesystem::path& cert,
                                                       const std::filesystem::path& key);

/// Server-side TLS settings: one certificate chain and its key.
class tls_server_context {
 public:
  /// `cert` is a PEM chain (leaf first), `key` its PEM private key (not encrypted). Throws
  /// std::runtime_error with what check_server_files() says when they do not serve.
  tls_server_context(const std::filesystem::path& cert, const std::filesystem::path& key);

  ssl_ctx_st* native_handle() const noexcept { return ctx_.get(); }

 private:
  std::shared_ptr<ssl_ctx_st> ctx_;
};

using tls_result = std::pair<asio::error_code, std::unique_ptr<mux::byte_stream>>;

/// Resolves `host`, connects to each address in turn until one accepts, then runs the TLS
/// handshake and verifies the chain and the host name (an IP SAN for IP literals). Sends SNI
/// for names. The whole call is bounded by `timeout`: it then fails with
/// asio::error::timed_out. Other failures: the connect error of the last address (e.g.
/// connection_refused), a resolver error, or a TLS error (see is_certificate_error,
/// describe_tls_error). Never throws for network reasons. When the certificate is not for
/// `host` and `mismatch_names` is given, it receives the names the certificate is for
/// ("localhost, 127.0.0.1, ::1"), so the user can be told which name would work.
asio::awaitable<tls_result> dial_tls(tls_client_context& ctx, std::string host, std::uint16_t port,
                                     std::chrono::milliseconds timeout,
                                     std::string* mismatch_names = nullptr);

/// Runs the server side of the handshake on an accepted socket, bounded by `timeout`
/// (then asio::error::timed_out). A peer that speaks anything but TLS fails fast with a TLS
/// error. The socket is closed on failure.
asio::awaitable<tls_result> accept_tls(tls_server_context& ctx, asio::ip::tcp::socket socket,
                                       std::chrono::milliseconds timeout);

/// True if the peer's certificate chain or its name failed verification.
bool is_certificate_error(const asio::error_code& ec);

/// One line for users: "certificate verification failed: unable to get local issuer
/// certificate", "TLS handshake failed: wrong version number", "connection refused",
/// "timed out", ...
std::string describe_tls_error(const asio::error_code& ec);

}  // namespace tether::transport
