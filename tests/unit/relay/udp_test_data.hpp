#pragma once
// What the UDP tests send: datagrams whose bytes tell them apart, over 127.0.0.1.

#include <asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tether::relay::testing {

using datagram = std::vector<std::byte>;

// `n` bytes that differ from one datagram to the next (by `seed`) and along the datagram.
inline datagram pattern(std::size_t n, std::uint32_t seed) {
  datagram d(n);
  for (std::size_t i = 0; i < n; ++i)
    d[i] = std::byte(static_cast<std::uint8_t>(i * 31 + seed * 7));
  return d;
}

inline const asio::ip::address loopback = asio::ip::make_address("127.0.0.1");

}  // namespace tether::relay::testing
