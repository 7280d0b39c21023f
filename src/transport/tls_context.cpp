// TLS settings shared by both sides: TLS 1.2 minimum (1.3 preferred), AES-GCM first because
// AES-NI makes it the fastest AEAD, ChaCha20 as fallback, no renegotiation, no compression.

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
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

// What a PEM file holds, by its armour lines, to say what it is when OpenSSL cannot use it
// as what it was given for. Read only on that error path; the first MiB is plenty.
struct pem_kinds {
  std::string unreadable;  // why the file could not be opened ("Permission denied")
  bool readable = false;
  bool certificate = false;
  bool private_key = false;
  bool encrypted_key = false;
};

pem_kinds pem_kinds_of(const std::filesystem::path& file) {
  pem_kinds k;
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    k.unreadable = errno != 0 ? std::strerror(errno) : "cannot open";
    return k;
  }
  std::string text(1 << 20, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  k.readable = true;
  k.certificate = text.find("-----BEGIN CERTIFICATE-----") != std::string::npos ||
                  text.find("-----BEGIN TRUSTED CERTIFICATE-----") != std::string::npos;
  k.private_key = text.find("PRIVATE KEY-----") != std::string::npos;
  k.encrypted_key = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos ||
                    text.find("Proc-Type: 4,ENCRYPTED") != std::string::npos;
  return k;
}

std::string quoted(const std::filesystem::path& file) {
  return "'" + file.string() + "'";
}

// Set on the key's read: a key with a passphrase fails instead of prompting on the terminal
// of a server that is starting (or reloading, with no terminal at all).
int no_passphrase(char*, int, int, void*) {
  return -1;
}

server_files_problem cert_problem(const std::filesystem::path& cert) {
  const auto k = pem_kinds_of(cert);
  if (!k.readable) return {"cert", quoted(cert) + " cannot be read: " + k.unreadable};
  if (k.private_key && !k.certificate)
    return {"cert", quoted(cert) + " is a private key, not a certificate"};
  if (!k.certificate)
    return {"cert", quoted(cert) + " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"};
  return {"cert",
          quoted(cert) + " holds a certificate that cannot be read (" + last_openssl_error() + ")"};
}

server_files_problem key_problem(const std::filesystem::path& key) {
  const auto k = pem_kinds_of(key);
  if (!k.readable) return {"key", quoted(key) + " cannot be read: " + k.unreadable};
  if (k.encrypted_key)
    return {"key", quoted(key) + " is encrypted with a passphrase; give the key unencrypted"};
  if (k.certificate && !k.private_key)
    return {"key", quoted(key) + " is a certificate, not a private key"};
  if (!k.private_key)
    return {"key", quoted(key) + " holds no PEM private key (-----BEGIN PRIVATE KEY-----)"};
  return {"key",
          quoted(key) + " holds a private key that cannot be read (" + last_openssl_error() + ")"};
}

std::optional<server_files_problem> unreadable(const std::filesystem::path& file,
                                               const char* setting) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    return server_files_problem{setting, quoted(file) + " does not exist or is not a file"};
  return std::nullopt;
}

// Loads the chain and the key into `c`, or says which of the two is wrong and how.
std::optional<server_files_problem> use_server_files(SSL_CTX* c, const std::filesystem::path& cert,
                                                     const std::filesystem::path& key) {
  ERR_clear_error();
  if (auto missing = unreadable(cert, "cert")) return missing;
  if (auto missing = unreadable(key, "key")) return missing;
  if (SSL_CTX_use_certificate_chain_file(c, cert.c_str()) != 1) return cert_problem(cert);
  ERR_clear_error();
  std::unique_ptr<BIO, int (*)(BIO*)> in(BIO_new_file(key.c_str(), "r"), &BIO_free);
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> pkey(
      in ? PEM_read_bio_PrivateKey(in.get(), nullptr, &no_passphrase, nullptr) : nullptr,
      &EVP_PKEY_free);
  if (!pkey) return key_problem(key);
  X509* leaf = SSL_CTX_get0_certificate(c);
  if (leaf == nullptr || X509_check_private_key(leaf, pkey.get()) != 1) {
    ERR_clear_error();
    return server_files_problem{
        "key", quoted(key) + " does not match the certificate in 'cert' (" + quoted(cert) + ")"};
  }
  if (SSL_CTX_use_PrivateKey(c, pkey.get()) != 1)
    return server_files_problem{"key",
                                quoted(key) + " cannot be used (" + last_openssl_error() + ")"};
  return std::nullopt;
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
  if (const auto problem = use_server_files(c, cert, key))
    throw std::runtime_error("TLS: " + problem->setting + ": " + problem->why);
}

std::optional<server_files_problem> check_server_files(const std::filesystem::path& cert,
                                                       const std::filesystem::path& key) {
  const auto ctx = new_context(TLS_server_method());
  return use_server_files(ctx.get(), cert, key);
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
