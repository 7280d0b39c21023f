#pragma once
// A TCP connection to a port of a directly reachable device.

#include <asio/ip/tcp.hpp>

#include "tether/relay/buffer_pool.hpp"
#include "tether/server/registry.hpp"
#include "tether/server/session_directory.hpp"
#include "tether/server/upstream.hpp"

namespace tether::server {

class tcp_upstream final : public upstream {
 public:
  tcp_upstream(asio::any_io_executor ex, const device& dev, std::uint16_t port,
               std::chrono::milliseconds connect_timeout, relay::buffer_pool& pool,
               device_activity* activity = nullptr);

  asio::awaitable<std::optional<refusal>> connect() override;
  asio::awaitable<relay_outcome> relay(mux::channel& ch) override;
  bool movable() const noexcept override { return true; }
  void adopt(relay::detached_socket connection) override;
  void abort() override;

 private:
  asio::ip::tcp::socket socket_;
  device device_;  // a copy: a reload may replace the registry while this stream lives
  std::uint16_t port_;
  std::chrono::milliseconds connect_timeout_;
  relay::buffer_pool& pool_;
  device_activity* activity_;  // told how each dial went; may be null
  bool adopted_ = false;       // connected already: a moved stream's connection
};

}  // namespace tether::server
