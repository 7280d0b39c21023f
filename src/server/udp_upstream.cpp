#include "udp_upstream.hpp"

#include "tether/relay/dial.hpp"

namespace tether::server {

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
  const auto ec = co_await relay::connect_udp(socket_, device_.address, port_, resolve_timeout_);
  if (!ec) co_return std::nullopt;
  const auto where = "device " + device_.id + " port " + std::to_string(port_) + "/udp";
  co_return refusal{relay::dial_failure(ec), where + ": " + relay::dial_failure_text(ec),
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
