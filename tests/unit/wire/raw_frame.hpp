#pragma once
// Frames written byte by byte, for the codec's tests: what the encoder would refuse to
// write (bad flags, wrong lengths, unknown types) and what a peer may send anyway.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tether::wire::testing {

/// A header with `len` as its length field, `type`, `flags` and `id`, then `payload`.
inline std::vector<std::byte> raw_frame(std::size_t len, std::uint8_t type, std::uint8_t flags,
                                        std::uint32_t id, const std::vector<std::uint8_t>& payload) {
  std::vector<std::byte> out;
  out.push_back(std::byte(len >> 16));
  out.push_back(std::byte(len >> 8));
  out.push_back(std::byte(len));
  out.push_back(std::byte(type));
  out.push_back(std::byte(flags));
  for (int i = 3; i >= 0; --i) out.push_back(std::byte(id >> (8 * i)));
  for (auto b : payload) out.push_back(std::byte(b));
  return out;
}

/// The same with the payload's own length.
inline std::vector<std::byte> raw_frame(std::uint8_t type, std::uint8_t flags, std::uint32_t id,
                                        const std::vector<std::uint8_t>& payload) {
  return raw_frame(payload.size(), type, flags, id, payload);
}

}  // namespace tether::wire::testing
