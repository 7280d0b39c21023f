#include "tunnel_socket.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>

namespace tether::transport::detail {
namespace {

// Enough unsent bytes to keep a fast path busy between two wake-ups of the writer (about
// 100 µs at 10 Gbit/s); what HTTP/2 servers use for the same reason (h2o: 16 KiB and up).
constexpr int unsent_limit = 128 * 1024;

// A path with a round trip under this is short: its bandwidth-delay product is small.
constexpr std::uint32_t short_path_rtt_us = 1000;
// The receive buffer of a short path: twice what a 10 Gbit/s path holds in flight over
// its round trip (1.25 bytes per ns), and never less than this.
constexpr std::uint32_t bytes_in_flight_per_rtt_us = 2 * 1250;
constexpr int min_receive_buffer = 256 * 1024;

}  // namespace

void limit_unsent(asio::ip::tcp::socket& s) noexcept {
  const int limit = unsent_limit;
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &limit, sizeof limit);
}

void bound_receive_queue(asio::ip::tcp::socket& s) noexcept {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(s.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return;
  // The smoothed round trip after the handshake's exchanges; 0 when the kernel has none.
  const std::uint32_t rtt_us = info.tcpi_rtt;
  if (rtt_us == 0 || rtt_us >= short_path_rtt_us) return;
  const int size =
      std::max(min_receive_buffer, static_cast<int>(rtt_us * bytes_in_flight_per_rtt_us));
  asio::error_code ignored;
  s.set_option(asio::socket_base::receive_buffer_size(size), ignored);
}

}  // namespace tether::transport::detail
