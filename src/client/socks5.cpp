#include "tether/client/socks5.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <array>

#include "tether/client/mapping.hpp"
#include "tether/mux/use_tuple.hpp"

namespace tether::client::socks5 {
namespace {

using namespace asio::experimental::awaitable_operators;

constexpr std::uint8_t version = 5;
constexpr std::uint8_t no_authentication = 0x00;
constexpr std::uint8_t no_acceptable_method = 0xff;
constexpr std::uint8_t cmd_connect = 1;
constexpr std::uint8_t atyp_ipv4 = 1;
constexpr std::uint8_t atyp_domain = 3;
constexpr std::uint8_t atyp_ipv6 = 4;

// Reads exactly `out.size()` bytes, or fails.
asio::awaitable<bool> read_exact(asio::ip::tcp::socket& sock, std::span<std::uint8_t> out) {
  auto [ec, n] = co_await asio::async_read(sock, asio::buffer(out.data(), out.size()), use_tuple);
  co_return !ec && n == out.size();
}

asio::awaitable<bool> write_all(asio::ip::tcp::socket& sock, std::span<const std::uint8_t> in) {
  auto [ec, n] = co_await asio::async_write(sock, asio::buffer(in.data(), in.size()), use_tuple);
  co_return !ec;
}

// The exchange before the target is known, without a deadline (accept_request adds one).
asio::awaitable<std::optional<mux::target>> negotiate(asio::ip::tcp::socket& sock) {
  std::array<std::uint8_t, 262> buf{};
  if (!co_await read_exact(sock, std::span(buf).first(2))) co_return std::nullopt;
  if (buf[0] != version) co_return std::nullopt;  // not SOCKS5: say nothing, close
  const std::size_t methods = buf[1];
  if (!co_await read_exact(sock, std::span(buf).subspan(2, methods))) co_return std::nullopt;
  const auto greeting = parse_greeting(std::span(buf).first(2 + methods));
  const std::array<std::uint8_t, 2> choice{version, *greeting ? no_authentication
                                                              : no_acceptable_method};
  if (!co_await write_all(sock, choice) || !*greeting) co_return std::nullopt;

  // VER CMD RSV ATYP, then the address (its length known from ATYP), then the port.
  if (!co_await read_exact(sock, std::span(buf).first(5))) co_return std::nullopt;
  std::size_t rest = 0;
  switch (buf[3]) {
    case atyp_ipv4: rest = 4 - 1 + 2; break;
    case atyp_ipv6: rest = 16 - 1 + 2; break;
    case atyp_domain: rest = std::size_t{buf[4]} + 2; break;
    default:
      co_await send_reply(sock, reply::address_type_not_supported);
      co_return std::nullopt;
  }
  if (!co_await read_exact(sock, std::span(buf).subspan(5, rest))) co_return std::nullopt;
  const auto req = parse_request(std::span(buf).first(5 + rest));
  if (req.refusal != reply::succeeded) {
    co_await send_reply(sock, req.refusal);
    co_return std::nullopt;
  }
  co_return req.target;
}

}  // namespace

reply reply_for(errc why) noexcept {
  switch (why) {
    case errc::forbidden:
    case errc::ssh_forwarding_denied: return reply::not_allowed;
    case errc::unknown_device: return reply::host_unreachable;
    case errc::unreachable: return reply::network_unreachable;
    case errc::refused: return reply::connection_refused;
    case errc::timed_out: return reply::ttl_expired;
    default: return reply::general_failure;
  }
}

std::optional<bool> parse_greeting(std::span<const std::uint8_t> b) {
  if (b.size() < 2 || b[0] != version || b.size() != 2 + std::size_t{b[1]}) return std::nullopt;
  for (std::size_t i = 2; i < b.size(); ++i)
    if (b[i] == no_authentication) return true;
  return false;
}

request parse_request(std::span<const std::uint8_t> b) {
  request r;
  r.refusal = reply::general_failure;
  if (b.size() < 7 || b[0] != version || b[2] != 0) return r;
  if (b[1] != cmd_connect) {
    r.refusal = reply::command_not_supported;  // BIND and UDP ASSOCIATE
    return r;
  }
  std::size_t at = 4;
  std::string host;
  switch (b[3]) {
    case atyp_ipv4: {
      if (b.size() != 4 + 4 + 2) return r;
      asio::ip::address_v4::bytes_type a;
      std::copy_n(b.begin() + 4, 4, a.begin());
      host = asio::ip::address_v4(a).to_string();
      at += 4;
      break;
    }
    case atyp_ipv6: {
      if (b.size() != 4 + 16 + 2) return r;
      asio::ip::address_v6::bytes_type a;
      std::copy_n(b.begin() + 4, 16, a.begin());
      host = asio::ip::address_v6(a).to_string();
      at += 16;
      break;
    }
    case atyp_domain: {
      const std::size_t n = b[4];
      if (n == 0 || b.size() != 5 + n + 2) return r;
      host.assign(reinterpret_cast<const char*>(b.data()) + 5, n);
      // A device id or host name: anything else could never be one, and would end up in logs.
      if (!parse_device(host)) {
        r.refusal = reply::host_unreachable;
        return r;
      }
      at += 1 + n;
      break;
    }
    default:
      r.refusal = reply::address_type_not_supported;
      return r;
  }
  const std::uint16_t port = static_cast<std::uint16_t>(b[at] << 8 | b[at + 1]);
  if (port == 0) return r;
  r.target = {std::move(host), port, mux::protocol::tcp};
  r.refusal = reply::succeeded;
  return r;
}

asio::awaitable<std::optional<mux::target>> accept_request(asio::ip::tcp::socket& sock,
                                                           std::chrono::milliseconds timeout) {
  asio::steady_timer deadline(sock.get_executor(), timeout);
  auto done = co_await (negotiate(sock) || deadline.async_wait(use_tuple));
  if (done.index() == 0) co_return std::get<0>(std::move(done));
  co_return std::nullopt;  // too slow: the caller closes the socket
}

asio::awaitable<bool> send_reply(asio::ip::tcp::socket& sock, reply r) {
  const std::array<std::uint8_t, 10> bytes{version, static_cast<std::uint8_t>(r), 0, atyp_ipv4,
                                           0,       0,                           0, 0,
                                           0,       0};
  co_return co_await write_all(sock, bytes);
}

}  // namespace tether::client::socks5
