#include "tls_pin.hpp"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cctype>
#include <string>
#include <vector>

namespace tether::transport::detail {

key_digest public_key_digest(X509* cert) {
  key_digest out{};
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), nullptr);
  if (len <= 0) return out;
  std::vector<unsigned char> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &p);
  unsigned int n = 0;
  EVP_Digest(der.data(), der.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

std::string pin_text(const key_digest& d) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (const auto b : d) {
    out += hex[b >> 4];
    out += hex[b & 0xf];
  }
  return out;
}

bool parse_pin(std::string_view text, key_digest& out) {
  // "SHA256:" too: the case of a copied fingerprint is no reason to refuse it.
  constexpr std::string_view prefix = "sha256:";
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  text.remove_prefix(prefix.size());
  if (text.size() != 2 * out.size()) return false;
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

namespace {

// Replaces OpenSSL's chain verification: the leaf's key is the whole identity.
int verify_pinned_key(X509_STORE_CTX* store, void* arg) {
  const auto& pin = *static_cast<const key_digest*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  if (leaf && public_key_digest(leaf) == pin) return 1;
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

}  // namespace

void require_pinned_key(SSL_CTX* ctx, const key_digest* pin) {
  SSL_CTX_set_cert_verify_callback(ctx, verify_pinned_key, const_cast<key_digest*>(pin));
}

}  // namespace tether::transport::detail
