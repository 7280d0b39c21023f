#pragma once
// One `-U` mapping: a local UDP socket whose datagrams are tunnelled as flows. Each local
// source (ip:port) is one flow, one udp stream; the device's replies on that stream go back
// to exactly that source. UDP stays lossy: a datagram that cannot go now is dropped and
// counted, never queued without bound.
//
// Threading: one single-threaded executor (the proxy's); all calls from it.

#include <asio/awaitable.hpp>
#include <asio/ip/udp.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "tether/client/events.hpp"
#include "tether/client/mapping.hpp"
#include "tether/mux/channel.hpp"
#include "tether/relay/datagram.hpp"

namespace tether::client {

struct udp_forwarder_options {
  /// A flow with no datagram either way for this long ends (its stream is reset with
  /// errc::timed_out); the next datagram from its source opens a new one.
  std::chrono::milliseconds idle{60000};
  /// Flows at once; a new source past it evicts the least recently used flow.
  std::size_t max_flows = 4096;
  /// Drops are logged at most this often, and only when there were some.
  std::chrono::milliseconds drop_report_interval{10000};
};

/// Opens the stream of a new flow. Reports its own failures (as events) and returns null
/// then; the forwarder forgets the flow and the next datagram from its source tries again.
using flow_opener = std::function<asio::awaitable<std::unique_ptr<mux::channel>>()>;

/// While a flow's stream is being opened it keeps this much, so the datagram that made it
/// open (a DNS query) is not lost; past it, datagrams drop with drop_reason::opening.
inline constexpr std::size_t max_datagrams_while_opening = 16;
inline constexpr std::size_t max_bytes_while_opening = 256 * 1024;

class udp_forwarder {
 public:
  /// `sock` is open and bound; `local` is its address as text ("127.0.0.1:5353") for events
  /// and logs. Nothing is read until start().
  udp_forwarder(asio::ip::udp::socket sock, mapping m, std::string local, event_sink& events,
                flow_opener open, udp_forwarder_options options);
  /// Stops, as stop() does.
  ~udp_forwarder();
  udp_forwarder(const udp_forwarder&) = delete;
  udp_forwarder& operator=(const udp_forwarder&) = delete;

  /// Starts reading datagrams from the socket.
  void start();

  /// Closes the socket and ends every flow at once (their streams are reset: there is no
  /// drain for UDP). Opens still in progress are dropped when they complete. Idempotent.
  void stop();

  const mapping& map() const noexcept;
  const std::string& local() const noexcept;
  std::size_t flow_count() const noexcept;
  /// Datagrams and bytes each way, and drops by reason, over the forwarder's life.
  const relay::datagram_counters& counters() const noexcept;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace tether::client
