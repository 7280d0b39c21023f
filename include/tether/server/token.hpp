#pragma once
// Bearer tokens: how they are made, stored (as SHA-256 hashes, never in clear) and checked.
// Pure functions over bytes; nothing here does I/O except read_token_file.

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace tether::server {

using sha256_digest = std::array<std::uint8_t, 32>;

/// A fresh random token: "tt_" followed by 32 bytes from the OpenSSL CSPRNG in unpadded
/// base64url (43 characters), so 256 bits of entropy in text that is safe in URLs, shells
/// and TOML strings. Throws std::runtime_error if the CSPRNG fails (nothing to fall back to).
std::string generate_token();

/// SHA-256 of `data` (OpenSSL EVP). Throws std::runtime_error only if OpenSSL itself fails.
sha256_digest sha256(std::string_view data);

/// Lower-case hex, 64 characters.
std::string to_hex(const sha256_digest& digest);

/// Parses exactly 64 hex digits (either case); nullopt for anything else.
std::optional<sha256_digest> parse_sha256_hex(std::string_view hex);

/// True if SHA-256(token) equals `expected`. The comparison takes the same time wherever
/// the digests differ (CRYPTO_memcmp), and hashing first means the token's length does not
/// leak either.
bool token_matches(std::string_view token, const sha256_digest& expected);

/// Reads a token from a file (a secret kept off the command line). Surrounding whitespace
/// and the trailing newline are dropped. Throws std::runtime_error naming the file if it is
/// missing, unreadable, empty, larger than 4 KiB or holds whitespace inside the token.
std::string read_token_file(const std::filesystem::path& path);

}  // namespace tether::server
