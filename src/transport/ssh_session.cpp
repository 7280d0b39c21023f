// The libssh2 session driver: readiness waits, rounds over waiting operations, the owner rule
// for half-sent packets, keepalives and teardown. See ssh_session.hpp for the rules it keeps.

#include "tether/printable.hpp"
#include "tether/transport/ssh_session.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

namespace tether::transport::detail {
namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Rounds per wake before the driver yields to other handlers.
constexpr int max_rounds = 16;

// Channel type of the probe open (see drain()); servers answer "unknown channel type".
constexpr std::string_view probe_type = "probe@tether.invalid";

// Builds the direct-tcpip open payload (RFC 4254 7.2): host and port to connect to, then the
// originator's address, which we do not expose.
std::string direct_tcpip_message(const std::string& host, std::uint16_t port) {
  std::string m;
  auto put_u32 = [&m](std::uint32_t v) {
    m += char(v >> 24);
    m += char(v >> 16);
    m += char(v >> 8);
    m += char(v);
  };
  put_u32(std::uint32_t(host.size()));
  m += host;
  put_u32(port);
  const std::string origin = "127.0.0.1";
  put_u32(std::uint32_t(origin.size()));
  m += origin;
  put_u32(0);
  return m;
}

// libssh2 1.10 reports an open refusal's SSH reason code only in its message text; these are
// its fixed strings for the codes of RFC 4254 5.1.
asio::error_code open_failure_code(int rc, const std::string& text) {
  if (rc == LIBSSH2_ERROR_TIMEOUT) return make_error_code(errc::timed_out);
  if (rc != LIBSSH2_ERROR_CHANNEL_FAILURE) return make_error_code(errc::internal);
  if (text.find("connect failed") != std::string::npos) return make_error_code(errc::refused);
  if (text.find("resource shortage") != std::string::npos)
    return make_error_code(errc::too_many_streams);
  // administratively prohibited, unknown channel type, or a reason libssh2 did not name.
  return make_error_code(errc::ssh_forwarding_denied);
}

}  // namespace

// ---- ssh_event, ssh_buffer_pool ----

ssh_event::ssh_event(const asio::any_io_executor& ex) : timer_(ex) {}

void ssh_event::notify() {
  notified_ = true;
  timer_.cancel();
}

asio::awaitable<ssh_event::woke> ssh_event::wait(std::chrono::steady_clock::time_point deadline) {
  notified_ = false;
  timer_.expires_at(deadline);
  auto [ec] = co_await timer_.async_wait(use_tuple);
  if (notified_) {
    notified_ = false;
    co_return woke::notified;
  }
  co_return ec ? woke::cancelled : woke::deadline;
}

void ssh_event::on_notify(std::function<void()> f) {
  notified_ = false;
  timer_.expires_at(std::chrono::steady_clock::time_point::max());
  // Runs also when the timer is cancelled by notify(), which is the point; the event may be
  // gone by then, so the handler does not touch it.
  timer_.async_wait([f = std::move(f)](const asio::error_code&) { f(); });
}

std::unique_ptr<std::byte[]> ssh_buffer_pool::take() {
  if (free_.empty()) return std::make_unique_for_overwrite<std::byte[]>(buffer_size);
  auto b = std::move(free_.back());
  free_.pop_back();
  return b;
}

void ssh_buffer_pool::give(std::unique_ptr<std::byte[]> b) {
  if (b && free_.size() < keep_) free_.push_back(std::move(b));
}

// ---- ssh_core: construction, callbacks ----

ssh_core::ssh_core(asio::any_io_executor ex, ssh_options opts)
    : ex_(ex),
      opts_(std::move(opts)),
      sock_(ex),
      deadline_timer_(ex),
      keepalive_timer_(ex),
      closed_timer_(ex, std::chrono::steady_clock::time_point::max()) {}

ssh_core::~ssh_core() {
  teardown();
}

std::string ssh_core::where() const {
  return opts_.user + "@" + opts_.host + ":" + std::to_string(opts_.port);
}

std::string ssh_core::last_error_text() const {
  if (!s_) return {};
  char* msg = nullptr;
  int len = 0;
  libssh2_session_last_error(s_, &msg, &len, 0);
  return msg ? std::string(msg, std::size_t(len)) : std::string();
}

// libssh2 does the socket I/O through these, so we see every byte and every half-sent packet.
ssize_t ssh_core::on_send(libssh2_socket_t fd, const void* buf, std::size_t len, int flags,
                          void** abstract) {
  auto& self = *static_cast<ssh_core*>(*abstract);
  if (self.io_failed_) {
    self.out_partial_ = false;
    return -EPIPE;
  }
  const auto* p = static_cast<const char*>(buf);
  std::size_t sent = 0;
  for (;;) {
    const auto n = ::send(fd, p + sent, len - sent, flags | MSG_NOSIGNAL);
    if (n > 0) {
      sent += std::size_t(n);
      self.tx_bytes_ += std::uint64_t(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      self.io_errno_ = errno;
      self.out_partial_ = false;
      return sent > 0 ? ssize_t(sent) : -errno;
    }
    if (sent == len || !self.in_keepalive_) break;
    // A keepalive must never be left half-sent: no later call could finish it safely
    // (libssh2_keepalive_send only sends when its interval has passed). We checked that the
    // socket was writable, so this wait is short or the peer has stopped reading.
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, 100) <= 0) {
      self.keepalive_stuck_ = true;
      break;
    }
  }
  self.out_partial_ = sent < len;
  return sent > 0 ? ssize_t(sent) : -EAGAIN;
}

ssize_t ssh_core::on_recv(libssh2_socket_t fd, void* buf, std::size_t len, int flags,
                          void** abstract) {
  auto& self = *static_cast<ssh_core*>(*abstract);
  if (self.io_failed_) return -ECONNABORTED;
  for (;;) {
    const auto n = ::recv(fd, buf, len, flags);
    if (n > 0) {
      self.rx_bytes_ += std::uint64_t(n);
      self.recv_blocked_ = false;
      return n;
    }
    if (n == 0) {
      self.peer_eof_ = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      self.recv_blocked_ = true;
      return -EAGAIN;
    }
    self.io_errno_ = errno;
    return -errno;
  }
}

void ssh_core::on_disconnect(LIBSSH2_SESSION*, int, const char* message, int message_len,
                             const char*, int, void** abstract) {
  auto& self = *static_cast<ssh_core*>(*abstract);
  if (message && message_len > 0)
    self.server_disconnect_ =
        printable(std::string_view(message, std::size_t(std::min(message_len, 512))));
}

// ---- running phase: attempts, rounds, waits ----

void ssh_core::attempt(const std::shared_ptr<ssh_chan>& c, op o) {
  if (!can_call_now() || !running_) return;
  const auto rx0 = rx_bytes_;
  run(c, o);
  if (dead_) return;
  // Packets for other channels may have been queued by this call, or more may wait in the
  // socket: give them a round.
  if (rx_bytes_ != rx0 || !recv_blocked_) schedule_poll();
  arm();
}

bool ssh_core::run(const std::shared_ptr<ssh_chan>& c, op o) {
  step(c, o);
  if (dead_) return false;
  if (out_partial_) {
    owner_chan_ = c;
    owner_op_ = o;
    return false;
  }
  return true;
}

ssh_core::step_r ssh_core::step(const std::shared_ptr<ssh_chan>& c, op o) {
  switch (o) {
    case op::open:
      return step_open(*c);
    case op::read:
      return step_read(*c);
    case op::read0:
      return step_read0(*c);
    case op::write:
      return step_write(*c);
    case op::eof:
      return step_eof(*c);
    case op::credit:
      return step_credit(*c);
    case op::close:
      return step_close(*c);
    case op::none:
      break;
  }
  return step_r::done;
}

bool ssh_core::is_fatal(int rc) const {
  if (io_failed_ || peer_eof_ || io_errno_ != 0) return true;
  switch (rc) {
    case LIBSSH2_ERROR_BANNER_RECV:
    case LIBSSH2_ERROR_BANNER_SEND:
    case LIBSSH2_ERROR_INVALID_MAC:
    case LIBSSH2_ERROR_KEX_FAILURE:
    case LIBSSH2_ERROR_ALLOC:
    case LIBSSH2_ERROR_SOCKET_SEND:
    case LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE:
    case LIBSSH2_ERROR_HOSTKEY_INIT:
    case LIBSSH2_ERROR_HOSTKEY_SIGN:
    case LIBSSH2_ERROR_DECRYPT:
    case LIBSSH2_ERROR_SOCKET_DISCONNECT:
    case LIBSSH2_ERROR_PROTO:
    case LIBSSH2_ERROR_SOCKET_TIMEOUT:
    case LIBSSH2_ERROR_ZLIB:
    case LIBSSH2_ERROR_COMPRESS:
    case LIBSSH2_ERROR_OUT_OF_BOUNDARY:
    case LIBSSH2_ERROR_SOCKET_RECV:
    case LIBSSH2_ERROR_ENCRYPT:
    case LIBSSH2_ERROR_BAD_SOCKET:
      return true;
    default:
      return false;
  }
}

// Ends the session after a failed call, with the most telling reason we have.
void ssh_core::fail_from(int rc) {
  std::string why;
  if (peer_eof_ || rc == LIBSSH2_ERROR_SOCKET_DISCONNECT) {
    why = "connection closed by the server";
    if (!server_disconnect_.empty()) why += " (" + server_disconnect_ + ")";
  } else if (io_errno_ == ETIMEDOUT) {
    why = "the server stopped answering (keepalive timeout)";
  } else if (io_errno_ != 0) {
    why = std::string("connection lost: ") + std::strerror(io_errno_);
  } else {
    why = "SSH session failed: " + last_error_text();
  }
  fail(make_error_code(errc::session_lost), std::move(why));
}

void ssh_core::fail_channel(ssh_chan& c, asio::error_code ec) {
  if (!c.err) c.err = ec;
  c.rx_want = c.tx_want = c.credit_want = c.eof_want = false;
  c.rx_ev.notify();
  c.tx_ev.notify();
}

ssh_core::step_r ssh_core::step_open(ssh_chan& c) {
  if (opens_.empty() || opens_.front().get() != &c) return step_r::done;
  auto self = opens_.front();  // `c` is the front: one open in flight per session
  c.open_started = true;
  LIBSSH2_CHANNEL* ch = nullptr;
  if (c.probe) {
    ch = libssh2_channel_open_ex(s_, probe_type.data(), unsigned(probe_type.size()),
                                 LIBSSH2_CHANNEL_WINDOW_DEFAULT, LIBSSH2_CHANNEL_PACKET_DEFAULT,
                                 nullptr, 0);
  } else {
    const auto msg = direct_tcpip_message(c.open_host, c.open_port);
    ch = libssh2_channel_open_ex(s_, "direct-tcpip", 12, opts_.channel_window,
                                 LIBSSH2_CHANNEL_PACKET_DEFAULT, msg.data(), unsigned(msg.size()));
  }
  drained_ = true;
  if (ch) {
    opens_.pop_front();
    c.ch = ch;
    c.open_done = true;
    if (c.probe || c.open_abandoned) c.closing = true;  // nobody will use it
    chans_.push_back(self);
    c.tx_ev.notify();
    return step_r::done;
  }
  const int rc = libssh2_session_last_errno(s_);
  if (rc == LIBSSH2_ERROR_EAGAIN) return step_r::blocked;
  if (is_fatal(rc)) {
    fail_from(rc);
    return step_r::done;
  }
  opens_.pop_front();
  c.open_done = true;
  c.open_message = printable(last_error_text());
  c.open_ec = open_failure_code(rc, c.open_message);
  c.tx_ev.notify();
  return step_r::done;
}

ssh_core::step_r ssh_core::step_read(ssh_chan& c) {
  if ((c.rx_len > 0 && !c.rx_delivered) || c.rx_eof) {  // already have something to give
    c.rx_want = false;
    c.rx_ev.notify();
    return step_r::done;
  }
  if (c.rx_len > 0) {  // delivered, still being written: its buffer must not be replaced
    c.rx_want = false;
    return step_r::done;
  }
  auto buf = pool_.take();
  const auto n =
      libssh2_channel_read(c.ch, reinterpret_cast<char*>(buf.get()), ssh_buffer_pool::buffer_size);
  drained_ = true;
  if (n > 0) {
    c.rx_buf = std::move(buf);
    c.rx_len = std::size_t(n);
    c.rx_delivered = false;
    c.bytes_in += std::uint64_t(n);
    c.rx_want = false;
    c.rx_ev.notify();
    return step_r::done;
  }
  pool_.give(std::move(buf));
  if (n == 0) {  // libssh2 returns 0 only once the server sent EOF or CLOSE
    c.rx_eof = true;
    if (!libssh2_channel_eof(c.ch)) c.remote_closed = true;  // CLOSE without EOF
    c.rx_want = false;
    c.rx_ev.notify();
    return step_r::done;
  }
  if (n == LIBSSH2_ERROR_EAGAIN) return step_r::blocked;
  if (is_fatal(int(n))) {
    fail_from(int(n));
    return step_r::done;
  }
  fail_channel(c, make_error_code(errc::stream_reset));
  return step_r::done;
}

ssh_core::step_r ssh_core::step_read0(ssh_chan& c) {
  char unused = 0;
  const auto n = libssh2_channel_read(c.ch, &unused, 0);
  drained_ = true;
  if (n < 0 && n != LIBSSH2_ERROR_EAGAIN && is_fatal(int(n))) fail_from(int(n));
  return step_r::done;
}

bool ssh_core::check_remote_closed(ssh_chan& c) {
  if (!c.rx_eof) return false;  // libssh2 can only tell after the server's EOF
  if (!c.remote_closed) {
    const int rc = libssh2_channel_wait_closed(c.ch);
    drained_ = true;
    if (rc == LIBSSH2_ERROR_EAGAIN) return false;
    if (rc < 0 && is_fatal(rc)) {
      fail_from(rc);
      return true;
    }
    if (rc != 0) return false;
    c.remote_closed = true;
  }
  // The server closed the channel (the device is gone both ways): nothing we send arrives.
  fail_channel(c, make_error_code(errc::stream_reset));
  return true;
}

ssh_core::step_r ssh_core::step_write(ssh_chan& c) {
  while (c.tx_done < c.tx_len) {
    const auto n = libssh2_channel_write(c.ch, reinterpret_cast<const char*>(c.tx_ptr + c.tx_done),
                                         c.tx_len - c.tx_done);
    drained_ = true;
    if (n > 0) {
      c.tx_done += std::size_t(n);
      c.bytes_out += std::uint64_t(n);
      if (c.tx_orphaned) break;  // the cancelled send's packet went out; drop the rest
      continue;
    }
    if (n == 0 || n == LIBSSH2_ERROR_EAGAIN) {
      if (out_partial_) return step_r::blocked;  // run() makes us the owner
      if (check_remote_closed(c)) return step_r::done;
      return step_r::blocked;  // no window: wait for the server's window adjust
    }
    if (is_fatal(int(n))) {
      fail_from(int(n));
      return step_r::done;
    }
    fail_channel(c, make_error_code(errc::stream_reset));
    return step_r::done;
  }
  if (c.tx_orphaned) {
    c.tx_orphan.clear();
    c.tx_orphaned = false;
    c.tx_done = c.tx_len;
  }
  c.tx_want = false;
  c.tx_ev.notify();
  return step_r::done;
}

ssh_core::step_r ssh_core::step_eof(ssh_chan& c) {
  const int rc = libssh2_channel_send_eof(c.ch);
  if (rc == 0) {
    c.eof_sent = true;
    c.eof_want = false;
    c.tx_ev.notify();
    return step_r::done;
  }
  if (rc == LIBSSH2_ERROR_EAGAIN) return step_r::blocked;
  if (is_fatal(rc)) {
    fail_from(rc);
    return step_r::done;
  }
  fail_channel(c, make_error_code(errc::stream_reset));
  return step_r::done;
}

ssh_core::step_r ssh_core::step_credit(ssh_chan& c) {
  if (libssh2_channel_window_write_ex(c.ch, nullptr) > 0) {
    c.credit_want = false;
    c.tx_ev.notify();
    return step_r::done;
  }
  if (check_remote_closed(c)) return step_r::done;
  return step_r::blocked;
}

ssh_core::step_r ssh_core::step_close(ssh_chan& c) {
  if (c.ch) {
    // Sends EOF and CLOSE if not sent yet, reads until the server answers, then frees.
    const int rc = libssh2_channel_free(c.ch);
    drained_ = true;
    if (rc == LIBSSH2_ERROR_EAGAIN) return step_r::blocked;
    if (rc < 0 && is_fatal(rc)) {
      fail_from(rc);
      return step_r::done;
    }
    if (!c.probe)
      spdlog::debug("ssh {}: channel to {} closed (sent {} B, received {} B)", where(), c.target,
                    c.bytes_out, c.bytes_in);
  }
  c.ch = nullptr;
  c.closing = false;
  c.gone = true;
  pool_.give(std::move(c.rx_buf));
  c.rx_len = 0;
  return step_r::done;
}

bool ssh_core::run_opens() {
  while (!opens_.empty()) {
    auto c = opens_.front();
    if (c->open_abandoned && !c->open_started) {
      opens_.pop_front();
      continue;
    }
    if (!run(c, op::open)) return false;
    if (!c->open_done) return true;  // waiting for the server's answer
  }
  return true;
}

// Makes libssh2 read what the socket holds when no waiting op did: window adjusts, the
// server's global requests (answered inside libssh2), EOF of the connection.
bool ssh_core::drain() {
  for (const auto& c : chans_)
    if (c->ch && !c->gone) return run(c, op::read0);
  if (!opens_.empty()) return run_opens();
  // No channel to read on. Are there bytes at all? (A peek reads nothing for libssh2.)
  char byte = 0;
  const auto n = ::recv(sock_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    recv_blocked_ = true;  // the socket is dry; libssh2 holds at most part of a packet
    return true;
  }
  if (n <= 0) {
    if (n == 0)
      peer_eof_ = true;
    else
      io_errno_ = errno;
    fail_from(0);
    return false;
  }
  // libssh2 1.10 has no call that only reads. Open a channel of a type nobody serves: while
  // libssh2 waits for the refusal it reads (and answers) whatever else the server sent.
  auto probe = std::make_shared<ssh_chan>(ex_);
  probe->probe = true;
  probe->target = "probe";
  opens_.push_back(std::move(probe));
  return run_opens();
}

void ssh_core::poll() {
  if (dead_ || polling_ || !running_) return;
  polling_ = true;
  struct reset_flag {
    bool& flag;
    ~reset_flag() { flag = false; }
  } guard{polling_};

  auto stop = [this] {
    if (!dead_) arm();
  };
  for (int round = 0; round < max_rounds; ++round) {
    const auto rx0 = rx_bytes_;
    drained_ = false;
    if (owner_op_ != op::none) {
      auto c = std::move(owner_chan_);
      const auto o = owner_op_;
      owner_op_ = op::none;
      if (!run(c, o)) return stop();
    }
    if (!run_opens()) return stop();
    for (std::size_t i = 0; i < chans_.size(); ++i) {
      const auto c = chans_[i];
      if (c->gone) continue;
      if (c->closing) {
        if (!run(c, op::close)) return stop();
        continue;
      }
      if (c->eof_want && !run(c, op::eof)) return stop();
      if (c->tx_want && !run(c, op::write)) return stop();
      if (c->rx_want && !run(c, op::read)) return stop();
      if (c->credit_want && !run(c, op::credit)) return stop();
    }
    std::erase_if(chans_, [](const auto& c) { return c->gone; });
    // Our readiness waits are edge-triggered (epoll): they fire on new bytes only. So before
    // waiting, libssh2 must have read the socket dry; some calls stop after one packet.
    if ((drain_needed_ || !recv_blocked_) && !drained_ && !drain()) return stop();
    drain_needed_ = false;
    // Nothing new came in: every op has seen everything libssh2 holds.
    if (rx_bytes_ == rx0 && recv_blocked_) return stop();
  }
  schedule_poll();  // still busy: let other handlers run first
  stop();
}

void ssh_core::schedule_poll() {
  if (poll_posted_ || dead_) return;
  poll_posted_ = true;
  asio::post(ex_, [self = shared_from_this()] {
    self->poll_posted_ = false;
    self->poll();
  });
}

void ssh_core::arm() {
  if (dead_ || !running_) return;
  // A read wait is always pending: epoll reports each arrival once, and a report with no
  // wait pending would be lost. An owner that must flush its packet also waits for room.
  const bool want_read = true;
  bool want_write = false;
  if (owner_op_ != op::none) {
    const int d = libssh2_session_block_directions(s_);
    want_write = (d & LIBSSH2_SESSION_BLOCK_OUTBOUND) != 0;
    if (!want_write && (d & LIBSSH2_SESSION_BLOCK_INBOUND) == 0) schedule_poll();
  }
  if (want_read && !rd_waiting_) {
    rd_waiting_ = true;
    sock_.async_wait(asio::socket_base::wait_read,
                     [self = shared_from_this()](asio::error_code ec) {
                       self->rd_waiting_ = false;
                       if (ec || self->dead_) return;
                       self->drain_needed_ = true;
                       self->poll();
                     });
  }
  if (want_write && !wr_waiting_) {
    wr_waiting_ = true;
    sock_.async_wait(asio::socket_base::wait_write,
                     [self = shared_from_this()](asio::error_code ec) {
                       self->wr_waiting_ = false;
                       if (ec || self->dead_) return;
                       self->poll();
                     });
  }
}

// ---- channels come and go ----

void ssh_core::queue_open(const std::shared_ptr<ssh_chan>& c) {
  opens_.push_back(c);
  if (opens_.size() == 1 && can_call_now()) {
    const auto rx0 = rx_bytes_;
    run_opens();
    if (dead_) return;
    if (rx_bytes_ != rx0) schedule_poll();
  }
  arm();
}

void ssh_core::abandon_open(const std::shared_ptr<ssh_chan>& c) {
  c->open_abandoned = true;
  if (!c->open_started) std::erase(opens_, c);
  schedule_poll();  // the next open may start now
}

void ssh_core::release(const std::shared_ptr<ssh_chan>& c) {
  if (dead_ || c->gone) return;
  c->rx_want = c->credit_want = c->eof_want = false;
  if (!is_owner(*c)) c->tx_want = false;
  pool_.give(std::move(c->rx_buf));
  c->rx_len = 0;
  c->closing = true;
  attempt(c, op::close);
  arm();
}

// ---- keepalive, end ----

void ssh_core::start_keepalive() {
  if (opts_.keepalive.count() <= 0 || dead_) return;
  keepalive_timer_.expires_after(opts_.keepalive);
  keepalive_timer_.async_wait([weak = weak_from_this()](asio::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->on_keepalive();
  });
}

void ssh_core::on_keepalive() {
  if (dead_) return;
  if (owner_op_ == op::none) {
    // Only into a socket with room: a keepalive must go out whole (see on_send).
    pollfd pfd{sock_.native_handle(), POLLOUT, 0};
    if (::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT)) {
      in_keepalive_ = true;
      int next = 0;
      const int rc = libssh2_keepalive_send(s_, &next);
      in_keepalive_ = false;
      if (keepalive_stuck_) {
        fail(make_error_code(errc::timed_out), "the server stopped reading (keepalive not sent)");
        return;
      }
      if (rc != 0 && rc != LIBSSH2_ERROR_EAGAIN) {
        fail_from(rc);
        return;
      }
      if (out_partial_) {
        // A key re-exchange the server started is half-sent; any call that reaches the
        // transport resumes it. Let the driver pick one as the owner.
        for (const auto& c : chans_)
          if (c->ch && !c->gone) {
            owner_chan_ = c;
            owner_op_ = op::read0;
            break;
          }
        if (owner_op_ == op::none && !opens_.empty()) {
          owner_chan_ = opens_.front();
          owner_op_ = op::open;
        }
        if (owner_op_ == op::none) {
          auto probe = std::make_shared<ssh_chan>(ex_);
          probe->probe = true;
          opens_.push_front(probe);
          owner_chan_ = probe;
          owner_op_ = op::open;
        }
      }
      arm();
    }
  }
  start_keepalive();
}

void ssh_core::close(const std::string& why) {
  if (dead_) return;
  if (s_ && running_ && owner_op_ == op::none && !out_partial_)
    libssh2_session_disconnect_ex(s_, SSH_DISCONNECT_BY_APPLICATION, why.c_str(), "");
  fail(make_error_code(errc::session_lost), why);
}

asio::awaitable<asio::error_code> ssh_core::wait_closed() {
  auto self = shared_from_this();
  if (!dead_) {
    co_await closed_timer_.async_wait(use_tuple);
    if (!dead_) co_return asio::error::operation_aborted;  // the caller was cancelled
  }
  co_return dead_ec_;
}

void ssh_core::fail(asio::error_code ec, std::string why) {
  if (dead_) return;
  dead_ = true;
  dead_ec_ = ec;
  dead_message_ = std::move(why);
  if (running_)
    spdlog::info("ssh {}: session ended: {} (sent {} B, received {} B)", where(), dead_message_,
                 tx_bytes_, rx_bytes_);
  auto chans = std::move(chans_);
  auto opens = std::move(opens_);
  chans_.clear();
  opens_.clear();
  owner_chan_.reset();
  owner_op_ = op::none;
  teardown();  // the channels' libssh2 objects go with the session
  const auto lost = make_error_code(errc::session_lost);
  for (auto& c : chans) {
    c->ch = nullptr;
    c->gone = true;
    fail_channel(*c, lost);
  }
  for (auto& c : opens) {
    c->open_done = true;
    c->open_ec = lost;
    c->open_message = dead_message_;
    c->tx_ev.notify();
  }
  keepalive_timer_.cancel();
  deadline_timer_.cancel();
  closed_timer_.cancel();
}

void ssh_core::teardown() {
  io_failed_ = true;  // from now on every libssh2 I/O fails at once: nothing blocks below
  if (s_) {
    // Frees every channel too. With I/O failing it does not wait; should it still say
    // EAGAIN, we retry a few times and then leave the memory rather than hang.
    for (int i = 0; i < 16; ++i)
      if (libssh2_session_free(s_) != LIBSSH2_ERROR_EAGAIN) break;
    s_ = nullptr;
  }
  asio::error_code ignored;
  sock_.close(ignored);
}

}  // namespace tether::transport::detail
