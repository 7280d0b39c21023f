#include "tether/relay/udp_batch.hpp"

#include <netinet/udp.h>

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

// A segmented send carries at most this many datagrams (the kernel's UDP_MAX_SEGMENTS)...
constexpr std::size_t max_segments = 64;
// ... and at most this many bytes: one IP packet's worth before segmentation, with room
// for IPv6's longer header.
constexpr std::size_t max_segmented_bytes = 65535 - 48;

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

std::size_t udp_send_batch::initial_gso_limit(asio::ip::udp::socket& sock) noexcept {
  // Only a UDP socket of a kernel that knows UDP_SEGMENT answers this.
  int segment = 0;
  socklen_t len = sizeof segment;
  if (::getsockopt(sock.native_handle(), SOL_UDP, UDP_SEGMENT, &segment, &len) != 0) return 0;
  return 65535;
}

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

std::size_t udp_send_batch::plan(std::size_t first, std::size_t gso_limit) {
  std::size_t offset = 0;
  for (std::size_t i = 0; i < first; ++i) offset += sizes_[i];
  std::size_t count = 0;
  for (std::size_t i = first; i < size(); ++count) {
    // A run: datagrams of the first one's size, to the same place; only the last of a run
    // may be shorter (that is how the kernel cuts a segmented send).
    const auto segment = sizes_[i];
    std::size_t j = i + 1;
    std::size_t bytes = segment;
    if (segment > 0 && segment <= gso_limit) {
      while (j < size() && j - i < max_segments && destinations_[j] == destinations_[i] &&
             sizes_[j] > 0 && sizes_[j] <= segment && bytes + sizes_[j] <= max_segmented_bytes) {
        bytes += sizes_[j];
        if (sizes_[j++] < segment) break;
      }
    }
    auto& m = messages_[count];
    m = {i, j - i, j - i > 1 ? segment : 0};
    vectors_[count] = {bytes_.data() + offset, bytes};
    auto& h = headers_[count].msg_hdr;
    h = {};
    if (const auto* to = destinations_[i]) {
      h.msg_name = const_cast<void*>(static_cast<const void*>(to->data()));
      h.msg_namelen = static_cast<socklen_t>(to->size());
    }
    h.msg_iov = &vectors_[count];
    h.msg_iovlen = 1;
    if (m.segment) {
      h.msg_control = controls_[count].bytes;
      h.msg_controllen = sizeof controls_[count].bytes;
      auto* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
      const auto gso_size = static_cast<std::uint16_t>(segment);
      std::memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
    }
    offset += bytes;
    i = j;
  }
  return count;
}

udp_send_batch::outcome udp_send_batch::send(asio::ip::udp::socket& sock, std::size_t first,
                                             std::size_t& gso_limit) {
  outcome out;
  // Messages are laid out again only when the kernel refused a segmented one.
  for (bool replan = true; replan;) {
    replan = false;
    const std::size_t count = plan(first + out.sent, gso_limit);
    std::size_t done = 0;  // messages
    while (done < count) {
      const int n = ::sendmmsg(sock.native_handle(), headers_.data() + done,
                               static_cast<unsigned>(count - done), MSG_DONTWAIT);
      if (n > 0) {
        for (int k = 0; k < n; ++k) out.sent += messages_[done + k].count;
        done += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      // The kernel reports an error only for the first message of a call. A later
      // message's error (a pending ICMP report, say) comes with the next call.
      const int e = n < 0 ? errno : EAGAIN;
      const auto& m = messages_[done];
      if (m.segment && (e == EINVAL || e == EMSGSIZE)) {
        gso_limit = m.segment - 1;  // above the route's MTU: each would need fragments
        replan = true;
      } else if (m.segment && (e == EIO || e == EOPNOTSUPP || e == ENOPROTOOPT)) {
        gso_limit = 0;  // no segmentation here (no checksum offload, an old kernel)
        replan = true;
      } else {
        errno = e;
        out.error = last_error();
      }
      break;
    }
  }
  return out;
}

}  // namespace tether::relay
