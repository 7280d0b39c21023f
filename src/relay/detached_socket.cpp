#include "tether/relay/detached_socket.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <utility>

namespace tether::relay {

detached_socket detached_socket::take(asio::ip::tcp::socket& sock) {
  detached_socket d;
  if (!sock.is_open()) return d;
  asio::error_code ec;
  const auto local = sock.local_endpoint(ec);
  d.protocol_ = !ec && local.address().is_v6() ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
  d.fd_ = sock.release(ec);
  if (ec) d.fd_ = -1;
  return d;
}

detached_socket::detached_socket(detached_socket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), protocol_(other.protocol_) {}

detached_socket& detached_socket::operator=(detached_socket&& other) noexcept {
  if (this != &other) {
    detached_socket gone(std::move(*this));
    fd_ = std::exchange(other.fd_, -1);
    protocol_ = other.protocol_;
  }
  return *this;
}

detached_socket::~detached_socket() {
  if (fd_ < 0) return;
  const ::linger abort_on_close{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  ::close(fd_);
}

asio::error_code detached_socket::attach_to(asio::ip::tcp::socket& sock) {
  asio::error_code ec;
  if (fd_ < 0) return make_error_code(asio::error::bad_descriptor);
  sock.assign(protocol_, fd_, ec);
  if (!ec) fd_ = -1;
  return ec;
}

}  // namespace tether::relay
