#include "resolve.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "tether/mux/use_tuple.hpp"

namespace tether::server {

asio::awaitable<std::pair<asio::error_code, std::vector<asio::ip::address>>> resolve_device(
    asio::any_io_executor ex, const std::string& host, std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  using result_type = std::pair<asio::error_code, std::vector<asio::ip::address>>;
  asio::error_code not_literal;
  if (const auto address = asio::ip::make_address(host, not_literal); !not_literal)
    co_return result_type{{}, {address}};
  asio::ip::tcp::resolver resolver(ex);
  asio::steady_timer deadline(ex, timeout);
  auto resolved = co_await (resolver.async_resolve(host, "", use_tuple) ||
                            deadline.async_wait(use_tuple));
  if (resolved.index() == 1) co_return result_type{asio::error::timed_out, {}};
  auto [ec, found] = std::get<0>(resolved);
  if (ec) co_return result_type{ec, {}};
  std::vector<asio::ip::address> out;
  for (const auto& entry : found) out.push_back(entry.endpoint().address());
  co_return result_type{{}, std::move(out)};
}

}  // namespace tether::server
