#pragma once
// The bulk lane of a `tether connect` (docs/PROTOCOL.md, "Lanes"): a second session to the
// same server, on a thread of its own, where streams that turn bulk move. The first
// session then carries only what stays interactive, and a keystroke no longer waits behind
// a copy in either end's event loop (the server serves the two sessions on different
// workers too).
//
// Threading: the lane's session, its streams and the sockets moved to it live on the
// lane's thread. stop(), ready(), carry() and cut() may be called from any other.

#include <asio/awaitable.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "counting_channel.hpp"
#include "tether/client/dialer.hpp"
#include "tether/mux/async_signal.hpp"
#include "tether/relay/buffer_pool.hpp"
#include "tether/relay/detached_socket.hpp"
#include "tether/relay/splice.hpp"

namespace tether::client {

class bulk_lane {
 public:
  /// `server` ("host:port") names the server in logs.
  bulk_lane(lane_dialer make_dialer, std::string server);
  /// stop()s.
  ~bulk_lane();
  bulk_lane(const bulk_lane&) = delete;
  bulk_lane& operator=(const bulk_lane&) = delete;

  /// Ends the lane: its session closes (the streams on it fail), and the thread is joined.
  void stop();
  /// A session is up: a stream may move now. The first call starts the lane (its thread
  /// dials, then keeps a session up until stop()): a client whose streams never turn bulk
  /// never makes a second session. Call from one thread.
  bool ready();

  /// One connection carried on the lane: what cut() needs to end it from elsewhere.
  struct carried;
  std::shared_ptr<carried> make_carried();

  /// Claims `token` on the lane's session and relays `connection` through the claimed
  /// stream there until both directions end; completes on the caller's executor. Bytes
  /// count into `totals`, which must outlive the call.
  asio::awaitable<relay::splice_result> carry(std::shared_ptr<carried> c,
                                              relay::detached_socket connection,
                                              wire::move_token token, byte_totals& totals);

  /// Resets a carried connection at both ends now (a mapping removed with cut).
  void cut(const std::shared_ptr<carried>& c);

 private:
  void start();
  asio::awaitable<void> keep_up();
  asio::awaitable<relay::splice_result> carry_here(std::shared_ptr<carried> c,
                                                   relay::detached_socket connection,
                                                   wire::move_token token, byte_totals& totals);

  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  dialer dial_;
  std::string server_;
  std::thread thread_;
  bool started_ = false;  // on the caller's thread
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopped_{false};  // its thread has ended, or is ending
  // On the lane's thread.
  std::shared_ptr<mux::tunnel> session_;
  relay::buffer_pool pool_;
  mux::async_signal stop_signal_;
  bool stopping_ = false;
};

}  // namespace tether::client
