#include "tether/relay/udp_batch.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tether::relay {
namespace {

asio::error_code last_error() {
  const int e = errno;
  // EWOULDBLOCK and EAGAIN are one value on Linux; name it the way Asio's callers test it.
  if (e == EAGAIN || e == EWOULDBLOCK) return asio::error::would_block;
  return {e, asio::error::get_system_category()};
}

}  // namespace

// ---- receiving ---------------------------------------------------------------------------

udp_receive_batch& udp_receive_batch::for_this_thread() {
  thread_local udp_receive_batch batch;
  return batch;
}

udp_receive_batch::udp_receive_batch()
    : slots_(std::make_unique_for_overwrite<std::byte[]>(udp_batch_size * slot_size)) {}

std::size_t udp_receive_batch::receive(asio::ip::udp::socket& sock, asio::error_code& ec) {
  for (std::size_t i = 0; i < udp_batch_size; ++i) {
    vectors_[i] = {slots_.get() + i * slot_size, slot_size};
    auto& h = headers_[i].msg_hdr;
    h = {};
    h.msg_name = &sources_[i];
    h.msg_namelen = sizeof sources_[i];
    h.msg_iov = &vectors_[i];
    h.msg_iovlen = 1;
    headers_[i].msg_len = 0;
  }
  int n;
  do {
    n = ::recvmmsg(sock.native_handle(), headers_.data(), udp_batch_size, MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    ec = last_error();
    return 0;
  }
  ec = {};
  return static_cast<std::size_t>(n);
}

std::span<const std::byte> udp_receive_batch::data(std::size_t i) const noexcept {
  return {slots_.get() + i * slot_size, headers_[i].msg_len};
}

bool udp_receive_batch::truncated(std::size_t i) const noexcept {
  return (headers_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
}

asio::ip::udp::endpoint udp_receive_batch::source(std::size_t i) const {
  asio::ip::udp::endpoint ep;
  const auto len = std::min<std::size_t>(headers_[i].msg_hdr.msg_namelen, ep.capacity());
  std::memcpy(ep.data(), &sources_[i], len);
  ep.resize(len);
  return ep;
}

// ---- sending -----------------------------------------------------------------------------

udp_send_batch& udp_send_batch::for_this_thread() {
  thread_local udp_send_batch batch;
  return batch;
}

void udp_send_batch::clear() noexcept {
  bytes_.clear();
  sizes_.clear();
  destinations_.clear();
}

bool udp_send_batch::fits(std::size_t n) const noexcept {
  return empty() || (size() < udp_batch_size && bytes_.size() + n <= max_bytes);
}

void udp_send_batch::add(std::span<const std::byte> datagram, const asio::ip::udp::endpoint* to) {
  bytes_.insert(bytes_.end(), datagram.begin(), datagram.end());
  sizes_.push_back(datagram.size());
  destinations_.push_back(to);
}

udp_send_batch::outcome udp_send_batch::send(asio::ip::udp::socket& sock, std::size_t first) {
  // The vectors point into bytes_, which add() may have moved: build them now.
  std::size_t offset = 0;
  for (std::size_t i = 0; i < first; ++i) offset += sizes_[i];
  const std::size_t count = size() - first;
  for (std::size_t k = 0; k < count; ++k) {
    const auto i = first + k;
    vectors_[k] = {bytes_.data() + offset, sizes_[i]};
    offset += sizes_[i];
    auto& h = headers_[k].msg_hdr;
    h = {};
    if (const auto* to = destinations_[i]) {
      h.msg_name = const_cast<void*>(static_cast<const void*>(to->data()));
      h.msg_namelen = static_cast<socklen_t>(to->size());
    }
    h.msg_iov = &vectors_[k];
    h.msg_iovlen = 1;
  }

  outcome out;
  while (out.sent < count) {
    const int n = ::sendmmsg(sock.native_handle(), headers_.data() + out.sent,
                             static_cast<unsigned>(count - out.sent), MSG_DONTWAIT);
    if (n > 0) {
      out.sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // The kernel reports an error only for the first datagram of a call: the one at
    // out.sent. A later datagram's error (a pending ICMP report, say) comes with the next
    // call.
    out.error = n < 0 ? last_error() : make_error_code(asio::error::would_block);
    break;
  }
  return out;
}

}  // namespace tether::relay
