#include "tcp_upstream.hpp"

#include "tether/relay/dial.hpp"
#include "tether/relay/splice.hpp"

namespace tether::server {

tcp_upstream::tcp_upstream(asio::any_io_executor ex, const device& dev, std::uint16_t port,
                           std::chrono::milliseconds connect_timeout, relay::buffer_pool& pool,
                           device_activity* activity)
    : socket_(ex),
      device_(dev),
      port_(port),
      connect_timeout_(connect_timeout),
      pool_(pool),
      activity_(activity) {}

asio::awaitable<std::optional<refusal>> tcp_upstream::connect() {
  if (adopted_) co_return std::nullopt;
  const auto ec = co_await relay::dial_tcp(socket_, device_.address, port_, connect_timeout_);
  if (activity_) {
    dial_result r{!ec, ec ? relay::dial_failure(ec) : errc::ok,
                  ec ? "port " + std::to_string(port_) + ": " + relay::dial_failure_text(ec)
                     : "port " + std::to_string(port_) + " answered",
                  std::chrono::system_clock::now()};
    activity_->dialed(device_.id, std::move(r));
  }
  if (!ec) co_return std::nullopt;
  const auto where = "device " + device_.id + " port " + std::to_string(port_);
  // The client is told what failed, not where the device lives; the log says both.
  co_return refusal{relay::dial_failure(ec), where + ": " + relay::dial_failure_text(ec),
                    where + " at " + device_.address + ": " + ec.message()};
}

asio::awaitable<relay_outcome> tcp_upstream::relay(mux::channel& ch) {
  const auto r = co_await relay::splice(socket_, ch, pool_);
  relay_outcome out;
  out.bytes_to_device = r.from_channel;
  out.bytes_from_device = r.to_channel;
  out.error = r.error;
  if (r.moved) {
    out.moved = r.token;
    out.connection = relay::detached_socket::take(socket_);
  }
  co_return out;
}

void tcp_upstream::adopt(relay::detached_socket connection) {
  adopted_ = !connection.attach_to(socket_);
}

void tcp_upstream::abort() {
  relay::abort_socket(socket_);
}

}  // namespace tether::server
