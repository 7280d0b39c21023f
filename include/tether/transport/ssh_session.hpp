#pragma once
// Internal to the SSH transport (src/transport/ssh_*.cpp); users include ssh.hpp.
//
// ssh_core drives one libssh2 session from one executor. libssh2 does all socket I/O itself;
// we only wait for the readiness it asks for. Three rules of libssh2 1.10 shape the driver:
//  - A call that returns EAGAIN after starting to send a packet must be repeated, with the
//    same arguments, before any other call may send: libssh2 keeps the half-sent packet and
//    would hand its completion to whichever call comes next (which then believes its own
//    packet went out). The send callback tells us when a packet is half-sent; the op that
//    caused it becomes the "owner" and is the only one called until it completes.
//  - Any call may read packets for every channel into libssh2's queue. So after a round in
//    which bytes came off the socket, every waiting op is tried again before we wait.
//  - Only one channel open can be in flight per session (libssh2 keeps its state in the
//    session), so opens are queued and answered in order.

#include <libssh2.h>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "tether/errc.hpp"
#include "tether/result.hpp"
#include "tether/transport/ssh.hpp"

namespace tether::transport::detail {

// Wakes one waiting coroutine. The driver sets the waiter's state, then calls notify(); the
// completion is posted, never run inline, so the driver is never re-entered.
class ssh_event {
 public:
  enum class woke { notified, deadline, cancelled };
  explicit ssh_event(const asio::any_io_executor& ex);
  void notify();
  /// Completes on notify(), at `deadline`, or with `cancelled` when the caller's coroutine is
  /// cancelled. Callers check their condition before waiting: a notify() with nobody waiting
  /// is not remembered.
  asio::awaitable<woke> wait(std::chrono::steady_clock::time_point deadline =
                                 std::chrono::steady_clock::time_point::max());
  /// wait() for callers that are not coroutines: calls `f()` on the next notify().
  void on_notify(std::function<void()> f);

 private:
  asio::steady_timer timer_;
  bool notified_ = false;
};

// Receive buffers, taken only while a channel holds unread bytes, so idle channels hold none.
class ssh_buffer_pool {
 public:
  static constexpr std::size_t buffer_size = 64 * 1024;
  std::unique_ptr<std::byte[]> take();
  void give(std::unique_ptr<std::byte[]> b);

 private:
  static constexpr std::size_t keep_ = 16;
  std::vector<std::unique_ptr<std::byte[]>> free_;
};

// One direct-tcpip channel, shared by the handle the relay holds and the driver.
struct ssh_chan {
  explicit ssh_chan(const asio::any_io_executor& ex) : rx_ev(ex), tx_ev(ex) {}

  LIBSSH2_CHANNEL* ch = nullptr;
  std::string target;  // "device:port", for logs

  // Opening.
  std::string open_host;
  std::uint16_t open_port = 0;
  bool probe = false;         // not a real open: only makes libssh2 read (see ssh_core::drain)
  bool open_started = false;  // libssh2 holds its state: it must be driven to the end
  bool open_done = false;
  bool open_abandoned = false;  // the opener gave up (deadline, cancel): close on success
  asio::error_code open_ec;
  std::string open_message;

  // Receiving. rx_buf holds rx_len unread bytes; delivered once receive() returned them.
  bool rx_want = false;
  std::unique_ptr<std::byte[]> rx_buf;
  std::size_t rx_len = 0;
  bool rx_delivered = false;
  bool rx_eof = false;
  bool remote_closed = false;

  // Sending. tx_* is the caller's buffer while a send() waits.
  bool tx_want = false;
  const std::byte* tx_ptr = nullptr;
  std::size_t tx_len = 0;
  std::size_t tx_done = 0;
  std::vector<std::byte> tx_orphan;  // copy kept when a cancelled send must still finish
  bool tx_orphaned = false;
  bool credit_want = false;
  bool eof_want = false;
  bool eof_sent = false;

  bool closing = false;  // the handle is gone or reset: free the libssh2 channel
  bool gone = false;     // freed; the driver forgets it
  asio::error_code err;  // once set, every operation fails with it

  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;

  ssh_event rx_ev;  // receive() waits here
  ssh_event tx_ev;  // open(), send(), send_eof(), wait_send_credit() wait here
};

class ssh_core : public std::enable_shared_from_this<ssh_core> {
 public:
  enum class op : std::uint8_t { none, open, read, read0, write, eof, credit, close };

  ssh_core(asio::any_io_executor ex, ssh_options opts);
  ~ssh_core();
  ssh_core(const ssh_core&) = delete;
  ssh_core& operator=(const ssh_core&) = delete;

  const asio::any_io_executor& executor() const { return ex_; }
  const ssh_options& options() const { return opts_; }
  ssh_buffer_pool& pool() { return pool_; }
  /// "user@host:port", for logs and messages.
  std::string where() const;

  // ---- connect phase (ssh_connect.cpp, ssh_auth.cpp) ----

  /// Resolves, connects, handshakes, checks the host key and authenticates. On success the
  /// driver runs until close() or the session dies.
  asio::awaitable<result<std::monostate>> start();

  LIBSSH2_SESSION* session() const { return s_; }

  /// Connect phase only: calls `f` until it returns something other than EAGAIN, waiting for
  /// the socket in between as libssh2 asks. Returns LIBSSH2_ERROR_TIMEOUT once the connect
  /// deadline has passed.
  template <class F>
  asio::awaitable<int> drive(F f) {
    for (;;) {
      const int rc = f();
      if (rc != LIBSSH2_ERROR_EAGAIN) co_return rc;
      if (!co_await wait_socket()) co_return LIBSSH2_ERROR_TIMEOUT;
    }
  }
  bool deadline_passed() const { return deadline_passed_; }
  /// libssh2's text for its last error.
  std::string last_error_text() const;

  // ---- running phase: called by the tunnel and channel handles ----

  bool dead() const { return dead_; }
  const std::string& dead_message() const { return dead_message_; }

  /// True when a libssh2 call may be made right now (no owner holds the session).
  bool can_call_now() const { return !dead_ && owner_op_ == op::none; }
  /// Makes one attempt of `o` on `c` now (see can_call_now), then lets the driver follow up.
  void attempt(const std::shared_ptr<ssh_chan>& c, op o);
  /// Makes sure the driver waits for what the registered wants need.
  void arm();
  bool is_owner(const ssh_chan& c) const { return owner_chan_.get() == &c; }

  void queue_open(const std::shared_ptr<ssh_chan>& c);
  /// The opener stopped waiting; an open libssh2 already started is finished and closed.
  void abandon_open(const std::shared_ptr<ssh_chan>& c);
  /// The handle is gone or reset: free the libssh2 channel in the background.
  void release(const std::shared_ptr<ssh_chan>& c);
  /// Fails the channel's pending and later operations with operation_aborted.
  void abort_channel(ssh_chan& c) { fail_channel(c, asio::error::operation_aborted); }

  /// Ends the session: a best-effort SSH disconnect, then every channel fails with
  /// errc::session_lost.
  void close(const std::string& why);
  /// Completes when the session has ended.
  asio::awaitable<asio::error_code> wait_closed();

  std::string last_open_error;

 private:
  enum class step_r { done, blocked };

  // Connect-phase helpers (ssh_connect.cpp).
  asio::awaitable<result<std::monostate>> connect_socket();
  asio::awaitable<result<std::monostate>> handshake_and_check_host();
  asio::awaitable<result<std::monostate>> authenticate();  // ssh_auth.cpp
  asio::awaitable<bool> wait_socket();
  void start_running();

  // Driver (ssh_session.cpp).
  step_r step(const std::shared_ptr<ssh_chan>& c, op o);
  step_r step_open(ssh_chan& c);
  step_r step_read(ssh_chan& c);
  step_r step_read0(ssh_chan& c);
  step_r step_write(ssh_chan& c);
  step_r step_eof(ssh_chan& c);
  step_r step_credit(ssh_chan& c);
  step_r step_close(ssh_chan& c);
  bool run(const std::shared_ptr<ssh_chan>& c, op o);  // false: stop the round (owner or dead)
  bool run_opens();
  bool drain();
  void poll();
  void schedule_poll();
  bool is_fatal(int rc) const;
  void fail_channel(ssh_chan& c, asio::error_code ec);
  bool check_remote_closed(ssh_chan& c);
  void fail(asio::error_code ec, std::string why);
  void fail_from(int rc);
  void teardown();
  void start_keepalive();
  void on_keepalive();

  static ssize_t on_send(libssh2_socket_t fd, const void* buf, std::size_t len, int flags,
                         void** abstract);
  static ssize_t on_recv(libssh2_socket_t fd, void* buf, std::size_t len, int flags,
                         void** abstract);
  static void on_disconnect(LIBSSH2_SESSION*, int reason, const char* message, int message_len,
                            const char*, int, void** abstract);

  asio::any_io_executor ex_;
  ssh_options opts_;
  asio::ip::tcp::socket sock_;
  LIBSSH2_SESSION* s_ = nullptr;
  ssh_buffer_pool pool_;

  // Connect phase.
  asio::steady_timer deadline_timer_;
  bool deadline_passed_ = false;

  // Driver state.
  std::vector<std::shared_ptr<ssh_chan>> chans_;  // open channels, and closing ones
  std::deque<std::shared_ptr<ssh_chan>> opens_;   // front is the open in flight
  std::shared_ptr<ssh_chan> owner_chan_;
  op owner_op_ = op::none;
  bool out_partial_ = false;  // libssh2 holds a half-sent packet (set by on_send)
  bool io_failed_ = false;    // the socket failed or we are tearing down: fail all I/O
  int io_errno_ = 0;
  bool peer_eof_ = false;
  bool recv_blocked_ = true;  // the last recv said EAGAIN: libssh2 read the socket dry
  bool in_keepalive_ = false;
  bool keepalive_stuck_ = false;
  std::string server_disconnect_;
  std::uint64_t rx_bytes_ = 0;
  std::uint64_t tx_bytes_ = 0;
  bool drained_ = false;       // this round made libssh2 read from the socket
  bool drain_needed_ = false;  // the socket became readable
  bool rd_waiting_ = false;
  bool wr_waiting_ = false;
  bool poll_posted_ = false;
  bool polling_ = false;
  bool running_ = false;
  asio::steady_timer keepalive_timer_;

  bool dead_ = false;
  asio::error_code dead_ec_;
  std::string dead_message_;
  asio::steady_timer closed_timer_;  // waited on by wait_closed(); cancelled at the end
};

/// The mux::tunnel over a started session (ssh_channel.cpp).
std::shared_ptr<mux::tunnel> make_ssh_tunnel(std::shared_ptr<ssh_core> core);

}  // namespace tether::transport::detail
