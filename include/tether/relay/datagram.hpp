#pragma once
// The forwarding engine for UDP: datagrams between a UDP socket and a datagram channel
// (a stream opened with protocol udp, see mux/channel.hpp). Each datagram travels whole;
// one that cannot go now is dropped and counted by reason, never queued without bound and
// never waited for, so a UDP flood cannot stall the TCP streams of the same session.

#include <array>
#include <asio/awaitable.hpp>
#include <asio/ip/udp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tether/mux/channel.hpp"
#include "tether/relay/buffer_pool.hpp"

namespace tether::relay {

enum class drop_reason : std::uint8_t {
  no_credit,    // the tunnel's window for the flow or the session is used up
  backlogged,   // the session has too much waiting to be written toward its peer
  opening,      // the flow's stream is still being opened and its small queue is full
  socket_full,  // the local UDP socket's send buffer is full
  too_large,    // above the largest datagram the tunnel carries (wire::max_datagram)
};
inline constexpr std::size_t drop_reason_count = 5;

/// Plain words for logs: "no credit", "session output backlogged", ...
const char* describe(drop_reason r) noexcept;

struct datagram_counters {
  std::uint64_t to_channel = 0;    // datagrams read from a socket and sent on a channel
  std::uint64_t from_channel = 0;  // datagrams received on a channel and written to a socket
  std::uint64_t bytes_to_channel = 0;
  std::uint64_t bytes_from_channel = 0;
  std::array<std::uint64_t, drop_reason_count> dropped{};

  void drop(drop_reason r) noexcept { ++dropped[static_cast<std::size_t>(r)]; }
  std::uint64_t dropped_total() const noexcept;
  /// Adds what `channel.try_send_datagram` said: counts the datagram as sent or dropped.
  void count_send(mux::datagram_status s, std::size_t bytes) noexcept;
  datagram_counters& operator+=(const datagram_counters& o) noexcept;
  /// "12 dropped: 10 no credit, 2 socket buffer full", or empty when nothing was dropped.
  std::string drop_summary() const;
};

class udp_send_batch;

/// The channel → socket half of a flow, driven by callbacks (an idle flow holds one small
/// pending callback). Each datagram received on the channel is written to `sock` (to `to`
/// when given: the client's flows share one listening socket) without waiting: a full
/// socket buffer drops it. What has arrived together goes out together, in one sendmmsg
/// (udp_batch.hpp). Ends, calling `on_end` once with the reason, when the channel
/// fails or the socket reports the destination port unreachable (errc::refused).
/// `on_activity` runs for every datagram delivered (idle tracking). Every datagram's credit
/// goes back to the channel, delivered or dropped. Sets `sock` non-blocking. At most 64
/// datagrams per turn of the event loop, then the rest on a later turn. `on_end` never runs
/// inside start(), and never after detach(). Single-threaded: call from the socket's executor.
class datagram_downlink : public std::enable_shared_from_this<datagram_downlink> {
 public:
  using end_handler = std::function<void(asio::error_code)>;

  static std::shared_ptr<datagram_downlink> start(asio::ip::udp::socket& sock,
                                                  std::optional<asio::ip::udp::endpoint> to,
                                                  mux::channel& ch, datagram_counters& counters,
                                                  end_handler on_end,
                                                  std::function<void()> on_activity = {});

  /// The socket, channel and counters are going away: no callback touches them after this.
  void detach() noexcept;
  bool ended() const noexcept { return ended_; }

  datagram_downlink(asio::ip::udp::socket& sock, std::optional<asio::ip::udp::endpoint> to,
                    mux::channel& ch, datagram_counters& counters, end_handler on_end,
                    std::function<void()> on_activity);

 private:
  void pump();
  // Sends what `batch` holds and counts it; false once the downlink ended or was detached.
  bool send_batch(udp_send_batch& batch);
  void end(asio::error_code why);

  asio::ip::udp::socket& sock_;
  std::optional<asio::ip::udp::endpoint> to_;
  mux::channel& ch_;
  datagram_counters& counters_;
  end_handler on_end_;
  std::function<void()> on_activity_;
  std::uint64_t watch_generation_ = 0;  // only the newest when_receivable callback acts
  std::size_t gso_limit_;               // see udp_send_batch::send
  bool ended_ = false;
  bool detached_ = false;
};

struct datagram_result {
  datagram_counters counters;
  /// Why the flow ended: errc::timed_out (idle), errc::refused (the port is unreachable),
  /// or the channel's failure (reset by the peer, session lost).
  asio::error_code error;
};

/// Relays one flow between a connected UDP socket (the server's socket toward a device
/// port) and a datagram channel until the flow has been idle for `idle` (no datagram
/// either way; zero: never), the channel fails, or the socket reports the port unreachable. The
/// channel is reset on the way out (timed_out for idle, refused for unreachable) unless it
/// failed first. Completes without throwing; the socket is closed on return. `pool` is no
/// longer used (datagrams are read in batches into per-thread memory, udp_batch.hpp); it
/// goes when its callers drop it.
asio::awaitable<datagram_result> relay_datagrams(asio::ip::udp::socket& sock, mux::channel& ch,
                                                 std::chrono::milliseconds idle, buffer_pool& pool);

}  // namespace tether::relay
