#pragma once
// Socket options of the TCP connection a session runs over (internal to the transport).
//
// A small frame written now waits behind every byte written before it that its peer has not
// yet read: what the kernel has not sent, and what it sent into the peer's receive buffer.
// Left alone, both grow to megabytes while a bulk transfer shares the connection (a
// receive buffer autotunes up to tcp_rmem's maximum, 32 MiB here, and fills whenever the
// receiving process falls behind), and an interactive stream's round trip grows to
// milliseconds even though the session's scheduler put its frame first. See
// docs/PERFORMANCE.md, "Latency under load".

#include <asio/ip/tcp.hpp>

namespace tether::transport::detail {

/// Before the handshake: the kernel takes at most this much not yet sent (TCP_NOTSENT_LOWAT);
/// the rest waits in the session, where frames of other streams can still go first.
void limit_unsent(asio::ip::tcp::socket& s) noexcept;

/// After the handshake: on a short path (round trip under a millisecond: loopback, a LAN)
/// the receive buffer is fixed at what such a path needs at 10 Gbit/s, at least 256 KiB,
/// so that bytes a busy receiver has not read yet cannot pile up in it. Longer paths keep
/// the kernel's autotuning: their windows must grow to the path.
void bound_receive_queue(asio::ip::tcp::socket& s) noexcept;

}  // namespace tether::transport::detail
