#include "tether/relay/dial.hpp"

#include <asio/connect.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>

#include "tether/mux/use_tuple.hpp"

namespace tether::relay {

asio::awaitable<std::pair<asio::error_code, std::vector<asio::ip::address>>> resolve_host(
    asio::any_io_executor ex, const std::string& host, std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  using result_type = std::pair<asio::error_code, std::vector<asio::ip::address>>;
  asio::error_code not_literal;
  if (const auto address = asio::ip::make_address(host, not_literal); !not_literal)
    co_return result_type{{}, {address}};
  asio::ip::tcp::resolver resolver(ex);
  asio::steady_timer deadline(ex, timeout);
  auto resolved =
      co_await (resolver.async_resolve(host, "", use_tuple) || deadline.async_wait(use_tuple));
  if (resolved.index() == 1) co_return result_type{asio::error::timed_out, {}};
  auto [ec, found] = std::get<0>(resolved);
  if (ec) co_return result_type{ec, {}};
  std::vector<asio::ip::address> out;
  for (const auto& entry : found) out.push_back(entry.endpoint().address());
  co_return result_type{{}, std::move(out)};
}

asio::awaitable<asio::error_code> dial_tcp(asio::ip::tcp::socket& sock, const std::string& host,
                                           std::uint16_t port, std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  const auto started = std::chrono::steady_clock::now();
  auto [rec, addresses] = co_await resolve_host(sock.get_executor(), host, timeout);
  if (rec) co_return rec;
  std::vector<asio::ip::tcp::endpoint> endpoints;
  for (const auto& a : addresses) endpoints.emplace_back(a, port);
  asio::steady_timer deadline(sock.get_executor(), started + timeout);  // resolving counts too
  auto connected =
      co_await (asio::async_connect(sock, endpoints, use_tuple) || deadline.async_wait(use_tuple));
  if (connected.index() == 1) co_return asio::error::timed_out;
  co_return std::get<0>(std::get<0>(connected));
}

asio::awaitable<asio::error_code> connect_udp(asio::ip::udp::socket& sock, const std::string& host,
                                              std::uint16_t port,
                                              std::chrono::milliseconds timeout) {
  using asio::ip::udp;
  auto [rec, addresses] = co_await resolve_host(sock.get_executor(), host, timeout);
  if (rec) co_return rec;
  asio::error_code ec;
  for (const auto& a : addresses) {
    ec = {};
    if (sock.is_open()) sock.close(ec);
    sock.open(a.is_v6() ? udp::v6() : udp::v4(), ec);
    if (!ec) sock.connect(udp::endpoint(a, port), ec);
    if (!ec) co_return ec;
  }
  co_return ec;
}

errc dial_failure(const asio::error_code& ec) noexcept {
  if (ec == asio::error::connection_refused) return errc::refused;
  if (ec == asio::error::timed_out) return errc::timed_out;
  if (ec == asio::error::no_descriptors || ec == std::errc::too_many_files_open_in_system)
    return errc::internal;
  return errc::unreachable;
}

std::string dial_failure_text(const asio::error_code& ec) {
  if (dial_failure(ec) == errc::internal) return "out of file descriptors";
  return ec.message();
}

}  // namespace tether::relay
