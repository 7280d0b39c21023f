#pragma once
// Trust by public key: `--pin sha256:HEX` accepts a server whose certificate carries that
// key, whoever signed it and whatever names it lists (what ssh does with host keys).

#include <openssl/ssl.h>

#include <array>
#include <cstdint>
#include <string_view>

namespace tether::transport::detail {

using key_digest = std::array<std::uint8_t, 32>;

/// SHA-256 of the certificate's SubjectPublicKeyInfo (DER).
key_digest public_key_digest(X509* cert);

/// "sha256:" and 64 lowercase hex digits.
std::string pin_text(const key_digest& d);

/// Parses pin_text()'s format (the prefix and the hex in either case). False when malformed.
bool parse_pin(std::string_view text, key_digest& out);

/// Makes `ctx` accept exactly the certificates whose key has digest `pin` (the chain and the
/// names are not checked). A mismatch fails the handshake with X509_V_ERR_CERT_REJECTED.
/// `pin` must outlive `ctx`'s handshakes.
void require_pinned_key(SSL_CTX* ctx, const key_digest* pin);

}  // namespace tether::transport::detail
