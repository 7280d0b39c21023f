#pragma once
// Many UDP datagrams per system call (Linux recvmmsg and sendmmsg; Asio has no wrapper).
//
// Why: a relay moving one datagram per recv()/send() spends most of its time entering the
// kernel, and each send() to a local peer may hand the CPU to that peer for a single
// datagram before the next one goes. Moving a burst in one call halves the relay's system
// calls and lets the peer find the whole burst when it wakes.
//
// Both batches live in per-thread scratch memory, so a flow holds nothing while idle: fill
// and use a batch between two suspensions, never across one. A batch is taken with
// for_this_thread() and is not reentrant. Single-threaded use per thread, like the sockets.

#include <sys/socket.h>

#include <array>
#include <asio/error_code.hpp>
#include <asio/ip/udp.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace tether::relay {

/// The most datagrams one batched call moves.
inline constexpr std::size_t udp_batch_size = 32;

/// Datagrams received from one socket by one call, valid until the next receive() on this
/// thread.
class udp_receive_batch {
 public:
  /// Room for one datagram: above the largest UDP payload over IPv4 and IPv6 without jumbo
  /// frames (65,527 bytes), so a datagram is only ever cut short when it is above what the
  /// tunnel carries anyway (wire::max_datagram).
  static constexpr std::size_t slot_size = 64 * 1024;

  static udp_receive_batch& for_this_thread();

  /// Receives the datagrams waiting on `sock` now, at most udp_batch_size, without waiting.
  /// Returns how many came; none with `ec` set: would_block when nothing waits, or the
  /// socket's pending error (connection_refused after an ICMP port unreachable on a
  /// connected socket).
  std::size_t receive(asio::ip::udp::socket& sock, asio::error_code& ec);

  /// The bytes of datagram `i` of the last receive().
  std::span<const std::byte> data(std::size_t i) const noexcept;
  /// Whether datagram `i` was longer than slot_size and was cut short.
  bool truncated(std::size_t i) const noexcept;
  /// Where datagram `i` came from.
  asio::ip::udp::endpoint source(std::size_t i) const;

  udp_receive_batch();
  udp_receive_batch(const udp_receive_batch&) = delete;
  udp_receive_batch& operator=(const udp_receive_batch&) = delete;

 private:
  // Touched only where datagrams land: small datagrams keep one page per slot resident.
  std::unique_ptr<std::byte[]> slots_;
  std::array<::mmsghdr, udp_batch_size> headers_;
  std::array<::iovec, udp_batch_size> vectors_;
  std::array<::sockaddr_storage, udp_batch_size> sources_;
};

/// Datagrams copied in one by one, then sent by as few calls as the socket allows. Runs of
/// datagrams of one size to one destination go as one segmented send (UDP GSO): the kernel
/// delivers the whole run before the receiver may run, where sendmmsg lets a local receiver
/// take the CPU after each datagram (the kernel yields between the messages of a call).
class udp_send_batch {
 public:
  /// Bytes a batch copies in before it counts as full (a single datagram of any size fits
  /// in an empty batch).
  static constexpr std::size_t max_bytes = 256 * 1024;
  /// What `sock` starts with as `gso_limit` in send(): no limit for a UDP socket on a
  /// kernel that segments (Linux 4.18 and later), until the kernel says one; 0 (never
  /// segment) otherwise. Anything but a UDP socket would take a segmented send as one
  /// long datagram.
  static std::size_t initial_gso_limit(asio::ip::udp::socket& sock) noexcept;

  static udp_send_batch& for_this_thread();

  void clear() noexcept;
  std::size_t size() const noexcept { return sizes_.size(); }
  std::size_t datagram_size(std::size_t i) const noexcept { return sizes_[i]; }
  bool empty() const noexcept { return sizes_.empty(); }
  /// Whether a datagram of `n` bytes can still be added.
  bool fits(std::size_t n) const noexcept;
  /// Copies `datagram` in (check fits() first), to go to `to`, or to the peer of a
  /// connected socket when `to` is null. `to` must outlive send().
  void add(std::span<const std::byte> datagram, const asio::ip::udp::endpoint* to);

  struct outcome {
    std::size_t sent = 0;  // how many of the datagrams from `first` on went, in order
    /// Why the next one (first + sent) did not go; no error when all went.
    asio::error_code error;
  };
  /// Sends datagrams `first`.. of the batch without waiting, in as few calls as it takes,
  /// and stops at the first one the socket refuses. `gso_limit` is the socket's: the
  /// largest datagram that may go in a segmented send, lowered here when the kernel refuses
  /// one (a route's MTU, a device without checksum offload), so that it is not tried again.
  outcome send(asio::ip::udp::socket& sock, std::size_t first, std::size_t& gso_limit);

  udp_send_batch() = default;
  udp_send_batch(const udp_send_batch&) = delete;
  udp_send_batch& operator=(const udp_send_batch&) = delete;

 private:
  // One message of a sendmmsg: a datagram alone, or a run of them sent segmented.
  struct message {
    std::size_t first;  // index of its first datagram
    std::size_t count;
    std::size_t segment;  // the run's datagram size; 0 when sent alone
  };
  // Lays out the messages for datagrams `first`.. and returns how many there are.
  std::size_t plan(std::size_t first, std::size_t gso_limit);

  std::vector<std::byte> bytes_;
  std::vector<std::size_t> sizes_;
  std::vector<const asio::ip::udp::endpoint*> destinations_;
  std::array<message, udp_batch_size> messages_;
  std::array<::mmsghdr, udp_batch_size> headers_;
  std::array<::iovec, udp_batch_size> vectors_;
  struct control_space {
    alignas(::cmsghdr) std::byte bytes[CMSG_SPACE(sizeof(std::uint16_t))];
  };
  std::array<control_space, udp_batch_size> controls_;
};

}  // namespace tether::relay
