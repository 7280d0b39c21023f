#include "tcp_upstream.hpp"

#include <asio/connect.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>

#include "resolve.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/relay/splice.hpp"

namespace tether::server {
namespace {

using asio::ip::tcp;

// Maps a failed dial to the reason the client will see.
errc dial_failure(const asio::error_code& ec) {
  if (ec == asio::error::connection_refused) return errc::refused;
  if (ec == asio::error::timed_out) return errc::timed_out;
  if (ec == asio::error::no_descriptors || ec == std::errc::too_many_files_open_in_system)
    return errc::internal;
  return errc::unreachable;
}

// What the client is told of a failed dial: what failed, not where the device lives (the
// server's log has the address).
std::string dial_failure_text(const asio::error_code& ec) {
  if (dial_failure(ec) == errc::internal) return "the server is out of file descriptors";
  return ec.message();
}

}  // namespace

tcp_upstream::tcp_upstream(asio::any_io_executor ex, const device& dev, std::uint16_t port,
                           std::chrono::milliseconds connect_timeout, relay::buffer_pool& pool)
    : socket_(ex), device_(dev), port_(port), connect_timeout_(connect_timeout), pool_(pool) {}

asio::awaitable<std::optional<refusal>> tcp_upstream::connect() {
  const auto ec = co_await dial();
  if (!ec) co_return std::nullopt;
  const auto where = "device " + device_.id + " port " + std::to_string(port_);
  co_return refusal{dial_failure(ec), where + ": " + dial_failure_text(ec),
                    where + " at " + device_.address + ": " + ec.message()};
}

asio::awaitable<asio::error_code> tcp_upstream::dial() {
  using namespace asio::experimental::awaitable_operators;
  const auto started = std::chrono::steady_clock::now();
  auto [rec, addresses] =
      co_await resolve_device(socket_.get_executor(), device_.address, connect_timeout_);
  if (rec) co_return rec;
  std::vector<tcp::endpoint> endpoints;
  for (const auto& a : addresses) endpoints.emplace_back(a, port_);
  asio::steady_timer deadline(socket_.get_executor(),
                              started + connect_timeout_);  // resolving counts too
  auto connected = co_await (asio::async_connect(socket_, endpoints, use_tuple) ||
                             deadline.async_wait(use_tuple));
  if (connected.index() == 1) co_return asio::error::timed_out;
  co_return std::get<0>(std::get<0>(connected));
}

asio::awaitable<relay_outcome> tcp_upstream::relay(mux::channel& ch) {
  const auto r = co_await relay::splice(socket_, ch, pool_);
  relay_outcome out;
  out.bytes_to_device = r.from_channel;
  out.bytes_from_device = r.to_channel;
  out.error = r.error;
  co_return out;
}

void tcp_upstream::abort() {
  relay::abort_socket(socket_);
}

}  // namespace tether::server
