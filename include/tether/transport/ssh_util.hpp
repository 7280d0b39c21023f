#pragma once
// Small pure helpers shared by the SSH transport: base64, the SSH wire "string", and
// OpenSSH-style key fingerprints and names. No I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tether::transport {

/// Standard base64 with padding.
std::string base64_encode(std::string_view bytes);

/// Decodes standard base64 (padding optional, whitespace not allowed). nullopt on bad input.
std::optional<std::string> base64_decode(std::string_view text);

/// Reads one SSH "string" (uint32 big-endian length, then bytes) from the front of `in` and
/// advances it. nullopt when `in` is too short for the length it announces.
std::optional<std::string_view> read_ssh_string(std::string_view& in);

/// The algorithm name a public key blob starts with ("ssh-ed25519", "ecdsa-sha2-nistp256",
/// ...); empty when the blob is malformed.
std::string ssh_key_type_of_blob(std::string_view blob);

/// OpenSSH's short name for a key type: "ED25519", "ECDSA", "RSA", "DSA" (else the type).
std::string ssh_key_display_name(std::string_view key_type);

/// "SHA256:" + base64 of SHA-256(blob) without padding, as `ssh-keygen -l` prints it.
std::string ssh_fingerprint_sha256(std::string_view blob);

}  // namespace tether::transport
