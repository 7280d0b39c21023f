#pragma once
// One `-L` mapping: a listening TCP socket whose accepted connections are each spliced to a
// stream of the tunnel (or one `-D`: the same, each connection to the target it asks for). It counts its connections and the bytes each way, and stops in one
// of two ways: draining (no new connections; open ones go on until they end) or cutting
// (open ones are reset now).
//
// Threading: one single-threaded executor (the proxy's); all calls from it.

#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tether/client/mapping.hpp"
#include "tether/client/udp_forwarder.hpp"
#include "tether/relay/buffer_pool.hpp"

namespace tether::client {

class bulk_lane;  // src/client/bulk_lane.hpp

/// Opens the stream of a new connection; reports its own failures and returns null then
/// (the connection is reset). The same shape as a UDP forwarder's flow_opener.
using stream_opener = flow_opener;

/// A stream to a target named by the connection itself (SOCKS, `-D`), or why there is none.
struct opened_to {
  std::unique_ptr<mux::channel> ch;
  errc reason = errc::ok;  // when !ch
};
using target_opener = std::function<asio::awaitable<opened_to>(mux::target)>;

/// How long a SOCKS client may take to say where it wants to go.
inline constexpr std::chrono::milliseconds socks_handshake_timeout{10000};

enum class stop_mode : std::uint8_t {
  drain,  // stop accepting; open connections go on until they end
  cut,    // stop accepting and reset every open connection now
};

class tcp_forwarder {
 public:
  /// `acceptor` is open, bound and listening; `local` is its address as text. Nothing is
  /// accepted until start(). `on_connection_end` runs after each connection has ended
  /// (the proxy waits on it to drain).
  tcp_forwarder(asio::ip::tcp::acceptor acceptor, mapping m, std::string local, stream_opener open,
                std::shared_ptr<relay::buffer_pool> pool, std::function<void()> on_connection_end);
  /// A SOCKS5 listener (`-D`, socks5.hpp): each connection names its target first.
  tcp_forwarder(asio::ip::tcp::acceptor acceptor, mapping m, std::string local,
                target_opener open, std::shared_ptr<relay::buffer_pool> pool,
                std::function<void()> on_connection_end);
  /// Stops with stop_mode::drain: open connections outlive the forwarder object.
  ~tcp_forwarder();
  tcp_forwarder(const tcp_forwarder&) = delete;
  tcp_forwarder& operator=(const tcp_forwarder&) = delete;

  /// Lanes (docs/PROTOCOL.md): connections that turn bulk move to `lane` (before start()).
  void use_lane(std::shared_ptr<bulk_lane> lane);

  /// Starts accepting.
  void start();

  /// Closes the listening socket (the port refuses connections from now on) and, with
  /// stop_mode::cut, resets every open connection: the local peer sees a reset, the device
  /// side a RESET of its stream. Idempotent; a cut after a drain cuts what is left.
  void stop(stop_mode how);

  const mapping& map() const noexcept;
  const std::string& local() const noexcept;
  std::size_t open_connections() const noexcept;
  std::uint64_t connections_total() const noexcept;
  /// Bytes toward the device and back, over every connection so far, open ones included.
  std::uint64_t bytes_out() const noexcept;
  std::uint64_t bytes_in() const noexcept;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace tether::client
