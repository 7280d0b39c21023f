#include "udp_upstream.hpp"

#include "resolve.hpp"

namespace tether::server {

using asio::ip::udp;

udp_upstream::udp_upstream(asio::any_io_executor ex, const device& dev, std::uint16_t port,
                           std::chrono::milliseconds resolve_timeout,
                           std::chrono::milliseconds idle, relay::buffer_pool& pool)
    : socket_(ex),
      device_(dev),
      port_(port),
      resolve_timeout_(resolve_timeout),
      idle_(idle),
      pool_(pool) {}

asio::awaitable<std::optional<refusal>> udp_upstream::connect() {
  const auto where = "device " + device_.id + " port " + std::to_string(port_) + "/udp";
  auto [rec, addresses] =
      co_await resolve_device(socket_.get_executor(), device_.address, resolve_timeout_);
  if (rec) {
    co_return refusal{rec == asio::error::timed_out ? errc::timed_out : errc::unreachable,
                      where + ": " + rec.message(),
                      where + " at " + device_.address + ": " + rec.message()};
  }
  // Connecting a UDP socket sends nothing: it fixes the peer (replies from any other
  // address are not delivered to it) and lets the kernel report ICMP port unreachable.
  asio::error_code ec;
  for (const auto& a : addresses) {
    ec = {};
    if (socket_.is_open()) socket_.close(ec);
    socket_.open(a.is_v6() ? udp::v6() : udp::v4(), ec);
    if (!ec) socket_.connect(udp::endpoint(a, port_), ec);
    if (!ec) co_return std::nullopt;
  }
  const auto code = ec == asio::error::no_descriptors ? errc::internal : errc::unreachable;
  co_return refusal{code, where + ": " + ec.message(),
                    where + " at " + device_.address + ": " + ec.message()};
}

asio::awaitable<relay_outcome> udp_upstream::relay(mux::channel& ch) {
  auto r = co_await relay::relay_datagrams(socket_, ch, idle_, pool_);
  relay_outcome out;
  out.bytes_to_device = r.counters.bytes_from_channel;
  out.bytes_from_device = r.counters.bytes_to_channel;
  out.datagrams = r.counters;
  out.error = r.error;
  co_return out;
}

}  // namespace tether::server
