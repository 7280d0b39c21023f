// TLS settings shared by both sides: TLS 1.2 minimum (1.3 preferred), AES-GCM first because
// AES-NI makes it the fastest AEAD, ChaCha20 as fallback, no renegotiation, no compression.

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <openssl/pem.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "tether/transport/tls.hpp"
#include "tls_pin.hpp"

namespace tether::transport {
namespace {

constexpr const char* tls13_suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The reason of the earliest queued OpenSSL error, for exception messages.
std::string last_openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  const char* reason = ERR_reason_error_string(e);
  return reason != nullptr ? reason : buf;
}

std::shared_ptr<ssl_ctx_st> new_context(const SSL_METHOD* method) {
  SSL_CTX* raw = SSL_CTX_new(method);
  if (raw == nullptr)
    throw std::runtime_error("TLS: cannot create context: " + last_openssl_error());
  std::shared_ptr<ssl_ctx_st> ctx(raw, &SSL_CTX_free);
  if (SSL_CTX_set_min_proto_version(raw, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(raw, tls13_suites) != 1 ||
      SSL_CTX_set_cipher_list(raw, tls12_ciphers) != 1) {
    throw std::runtime_error("TLS: cannot configure context: " + last_openssl_error());
  }
  SSL_CTX_set_options(raw, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // Frees the 16 KiB record buffers of idle connections.
  SSL_CTX_set_mode(raw, SSL_MODE_RELEASE_BUFFERS);
  // Lets OpenSSL take all buffered ciphertext at once instead of record header, then body.
  SSL_CTX_set_read_ahead(raw, 1);
  return ctx;
}

void require_readable(const std::filesystem::path& file, const char* what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw std::runtime_error(std::string("TLS: ") + what + " '" + file.string() +
                             "' does not exist or is not a regular file");
  }
}

}  // namespace

tls_client_context::tls_client_context(const tls_client_config& config)
    : config_(config), ctx_(new_context(TLS_client_method())) {
  SSL_CTX* c = ctx_.get();
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  // We never resume sessions, so session tickets the server sends are read and dropped.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (!config_.pin.empty()) {
    auto pin = std::make_shared<detail::key_digest>();
    if (!detail::parse_pin(config_.pin, *pin))
      throw std::invalid_argument("--pin '" + config_.pin +
                                  "': expected sha256: and 64 hex digits, as `tether server "
                                  "--print-fingerprint` prints");
    detail::require_pinned_key(c, pin.get());
    // The digest lives as long as the SSL_CTX: streams may keep that beyond this object.
    ctx_ = std::shared_ptr<ssl_ctx_st>(c, [keep = ctx_, pin](ssl_ctx_st*) {});
    return;
  }
  if (config_.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(c) != 1) {
      throw std::runtime_error("TLS: cannot load the system trust store: " + last_openssl_error());
    }
    return;
  }
  require_readable(config_.ca_file, "CA file");
  if (SSL_CTX_load_verify_file(c, config_.ca_file.c_str()) != 1) {
    throw std::runtime_error("TLS: cannot load CA file '" + config_.ca_file +
                             "': " + last_openssl_error());
  }
}

tls_server_context::tls_server_context(const std::filesystem::path& cert,
                                       const std::filesystem::path& key)
    : ctx_(new_context(TLS_server_method())) {
  SSL_CTX* c = ctx_.get();
  // Our ciphers order wins: AES-GCM even for clients that list ChaCha20 first.
  SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE);
  // No stateful session cache (TLS 1.2 session ids) growing with every client.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  require_readable(cert, "certificate file");
  require_readable(key, "private key file");
  if (SSL_CTX_use_certificate_chain_file(c, cert.c_str()) != 1) {
    throw std::runtime_error("TLS: cannot load certificate chain '" + cert.string() +
                             "': " + last_openssl_error());
  }
  if (SSL_CTX_use_PrivateKey_file(c, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw std::runtime_error("TLS: cannot load private key '" + key.string() +
                             "': " + last_openssl_error());
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    throw std::runtime_error("TLS: private key '" + key.string() +
                             "' does not match certificate '" + cert.string() + "'");
  }
}

std::string public_key_pin(const std::filesystem::path& cert_pem) {
  require_readable(cert_pem, "certificate file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(cert_pem.c_str(), "r"), &std::fclose);
  if (!f) throw std::runtime_error("TLS: cannot open certificate file '" + cert_pem.string() + "'");
  std::unique_ptr<X509, void (*)(X509*)> cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr),
                                              &X509_free);
  if (!cert)
    throw std::runtime_error("TLS: no PEM certificate in '" + cert_pem.string() +
                             "': " + last_openssl_error());
  return detail::pin_text(detail::public_key_digest(cert.get()));
}

}  // namespace tether::transport
