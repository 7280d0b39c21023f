#pragma once
// A UDP flow toward a port of a directly reachable device: one connected UDP socket per
// flow, so that only the device port's replies come back on it, to this flow alone.

#include <asio/ip/udp.hpp>

#include "tether/relay/buffer_pool.hpp"
#include "tether/server/registry.hpp"
#include "tether/server/upstream.hpp"

namespace tether::server {

class udp_upstream final : public upstream {
 public:
  udp_upstream(asio::any_io_executor ex, const device& dev, std::uint16_t port,
               std::chrono::milliseconds resolve_timeout, std::chrono::milliseconds idle,
               relay::buffer_pool& pool);

  asio::awaitable<std::optional<refusal>> connect() override;
  asio::awaitable<relay_outcome> relay(mux::channel& ch) override;

 private:
  asio::ip::udp::socket socket_;
  device device_;  // a copy: a reload may replace the registry while this stream lives
  std::uint16_t port_;
  std::chrono::milliseconds resolve_timeout_;
  std::chrono::milliseconds idle_;
  relay::buffer_pool& pool_;
};

}  // namespace tether::server
