#include "tether/server/token.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace tether::server {
namespace {

constexpr std::size_t token_bytes = 32;
constexpr std::size_t max_token_file_size = 4096;  // a token is ~50 bytes; refuse junk early

std::string base64url(const std::uint8_t* data, std::size_t n) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((n * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const std::uint32_t v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (n - i == 1) {
    const std::uint32_t v = data[i] << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
  } else if (n - i == 2) {
    const std::uint32_t v = (data[i] << 16) | (data[i + 1] << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

std::string generate_token() {
  std::array<std::uint8_t, token_bytes> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    throw std::runtime_error("generating a token: the OpenSSL random generator failed");
  }
  std::string token = "tt_" + base64url(raw.data(), raw.size());
  OPENSSL_cleanse(raw.data(), raw.size());
  return token;
}

sha256_digest sha256(std::string_view data) {
  sha256_digest out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    throw std::runtime_error("SHA-256: OpenSSL EVP_Digest failed");
  }
  return out;
}

std::string to_hex(const sha256_digest& digest) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(digest.size() * 2);
  for (auto b : digest) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::optional<sha256_digest> parse_sha256_hex(std::string_view hex) {
  sha256_digest out{};
  if (hex.size() != out.size() * 2) return std::nullopt;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

bool token_matches(std::string_view token, const sha256_digest& expected) {
  const sha256_digest actual = sha256(token);
  return CRYPTO_memcmp(actual.data(), expected.data(), actual.size()) == 0;
}

std::string read_token_file(const std::filesystem::path& path) {
  const std::string name = "token file '" + path.string() + "'";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(name + ": cannot open: " + std::strerror(errno));
  std::string text;
  text.resize(max_token_file_size + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw std::runtime_error(name + ": read failed");
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max_token_file_size) {
    throw std::runtime_error(name + ": larger than 4096 bytes, not a token");
  }
  std::size_t b = 0;
  std::size_t e = text.size();
  while (b < e && is_space(text[b])) ++b;
  while (e > b && is_space(text[e - 1])) --e;
  if (b == e) throw std::runtime_error(name + " is empty");
  std::string token = text.substr(b, e - b);
  OPENSSL_cleanse(text.data(), text.size());
  for (char c : token) {
    if (is_space(c)) {
      throw std::runtime_error(name + ": whitespace inside the token (one token per file)");
    }
  }
  return token;
}

}  // namespace tether::server
