#include "tether/transport/ssh_util.hpp"

#include <openssl/evp.h>

#include <array>

namespace tether::transport {
namespace {

constexpr std::string_view alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int decode_char(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) |
                   (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) | std::uint8_t(bytes[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (const auto rest = bytes.size() - i; rest > 0) {
    std::uint32_t v = std::uint32_t(std::uint8_t(bytes[i])) << 16;
    if (rest == 2) v |= std::uint32_t(std::uint8_t(bytes[i + 1])) << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : text) {
    const int v = decode_char(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | std::uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::optional<std::string_view> read_ssh_string(std::string_view& in) {
  if (in.size() < 4) return std::nullopt;
  const std::uint32_t n = (std::uint32_t(std::uint8_t(in[0])) << 24) |
                          (std::uint32_t(std::uint8_t(in[1])) << 16) |
                          (std::uint32_t(std::uint8_t(in[2])) << 8) | std::uint8_t(in[3]);
  in.remove_prefix(4);
  if (n > in.size()) return std::nullopt;
  const auto s = in.substr(0, n);
  in.remove_prefix(n);
  return s;
}

std::string ssh_key_type_of_blob(std::string_view blob) {
  auto type = read_ssh_string(blob);
  return type ? std::string(*type) : std::string();
}

std::string ssh_key_display_name(std::string_view key_type) {
  if (key_type == "ssh-ed25519") return "ED25519";
  if (key_type.starts_with("ecdsa-sha2-")) return "ECDSA";
  if (key_type == "ssh-rsa" || key_type.starts_with("rsa-sha2-")) return "RSA";
  if (key_type == "ssh-dss") return "DSA";
  return std::string(key_type);
}

std::string ssh_fingerprint_sha256(std::string_view blob) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(blob.data(), blob.size(), md.data(), &len, EVP_sha256(), nullptr);
  auto b64 = base64_encode(std::string_view(reinterpret_cast<const char*>(md.data()), len));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "SHA256:" + b64;
}

}  // namespace tether::transport
