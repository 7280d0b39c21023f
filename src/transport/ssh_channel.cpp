// The mux::tunnel and mux::channel faces of an SSH session. Each call first tries libssh2
// right away (most receives find data libssh2 has already queued), and otherwise registers
// what it waits for with the driver and sleeps until the driver wakes it.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/error.hpp>

#include "tether/transport/ssh.hpp"
#include "tether/transport/ssh_session.hpp"

namespace tether::transport {
namespace detail {
namespace {

using woke = ssh_event::woke;

// What wait_send_credit() offers at most: enough for a few SSH packets per send().
constexpr std::size_t max_credit = 256 * 1024;

// Whether receive() has something to return without waiting.
bool receivable(const ssh_chan& c) { return (c.rx_len > 0 && !c.rx_delivered) || c.err || c.rx_eof; }

class ssh_channel final : public mux::channel {
 public:
  ssh_channel(std::shared_ptr<ssh_core> core, std::shared_ptr<ssh_chan> c)
      : core_(std::move(core)), c_(std::move(c)) {}
  ~ssh_channel() override { release(); }
  ssh_channel(const ssh_channel&) = delete;
  ssh_channel& operator=(const ssh_channel&) = delete;

  asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() override {
    auto& c = *c_;
    for (;;) {
      if (c.err) co_return std::pair{c.err, std::size_t{0}};
      if (c.eof_sent || c.eof_want)
        co_return std::pair{make_error_code(asio::error::shut_down), std::size_t{0}};
      const auto window = libssh2_channel_window_write_ex(c.ch, nullptr);
      if (window > 0)
        co_return std::pair{asio::error_code{}, std::min<std::size_t>(window, max_credit)};
      c.credit_want = true;
      core_->arm();
      if (co_await c.tx_ev.wait() == woke::cancelled && c.credit_want) {
        c.credit_want = false;
        co_return std::pair{make_error_code(asio::error::operation_aborted), std::size_t{0}};
      }
    }
  }

  asio::awaitable<asio::error_code> send(std::span<const std::byte> data) override {
    auto& c = *c_;
    if (c.err) co_return c.err;
    if (c.eof_sent || c.eof_want) co_return make_error_code(asio::error::shut_down);
    if (data.empty()) co_return asio::error_code{};
    c.tx_ptr = data.data();
    c.tx_len = data.size();
    c.tx_done = 0;
    core_->attempt(c_, ssh_core::op::write);
    while (c.tx_done < c.tx_len && !c.err) {
      c.tx_want = true;
      core_->arm();
      if (co_await c.tx_ev.wait() == woke::cancelled && c.tx_done < c.tx_len && !c.err) {
        if (core_->is_owner(c)) {
          // libssh2 holds our half-sent packet and must be called again for it: keep what
          // is left of the bytes, since the caller's buffer may go away now.
          c.tx_orphan.assign(c.tx_ptr + c.tx_done, c.tx_ptr + c.tx_len);
          c.tx_ptr = c.tx_orphan.data();
          c.tx_len = c.tx_orphan.size();
          c.tx_done = 0;
          c.tx_orphaned = true;
        } else {
          c.tx_want = false;
        }
        co_return make_error_code(asio::error::operation_aborted);
      }
    }
    c.tx_want = false;
    c.tx_ptr = nullptr;
    if (c.tx_done == c.tx_len) co_return asio::error_code{};
    co_return c.err;
  }

  asio::awaitable<asio::error_code> send_eof() override {
    auto& c = *c_;
    if (c.eof_sent) co_return asio::error_code{};
    if (c.err) co_return c.err;
    c.eof_want = true;
    core_->attempt(c_, ssh_core::op::eof);
    while (!c.eof_sent && !c.err) {
      core_->arm();
      if (co_await c.tx_ev.wait() == woke::cancelled && !c.eof_sent && !c.err) {
        if (!core_->is_owner(c)) c.eof_want = false;
        co_return make_error_code(asio::error::operation_aborted);
      }
    }
    co_return c.eof_sent ? asio::error_code{} : c.err;
  }

  std::pair<asio::error_code, std::span<const std::byte>> try_receive() override {
    auto& c = *c_;
    release_rx();  // the previous span is done with
    if (!c.rx_want && !receivable(c) && core_->can_call_now())
      core_->attempt(c_, ssh_core::op::read);
    if (c.rx_len > 0 && !c.rx_delivered) {
      c.rx_delivered = true;
      return {asio::error_code{}, std::span<const std::byte>(c.rx_buf.get(), c.rx_len)};
    }
    if (c.err) return {c.err, {}};
    if (c.rx_eof) return {asio::error_code{}, {}};
    return {asio::error::would_block, {}};
  }

  asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() override {
    auto& c = *c_;
    for (;;) {
      auto got = try_receive();
      if (got.first != asio::error::would_block) co_return got;
      want_rx();
      if (co_await c.rx_ev.wait() == woke::cancelled && !receivable(c)) {
        // An owner read must still finish; its bytes wait for the next receive().
        if (!core_->is_owner(c)) c.rx_want = false;
        co_return std::pair{make_error_code(asio::error::operation_aborted),
                            std::span<const std::byte>{}};
      }
    }
  }

  void when_receivable(std::function<void()> wake) override {
    // While the caller still holds the bytes it was lent (its write is waiting), only a
    // failure may wake it: a read now would replace the buffer it is writing from.
    if (!holds_lent_bytes()) want_rx();
    c_->rx_ev.on_notify(std::move(wake));
  }

  asio::error_code error() const noexcept override { return c_->err; }

  void consumed(std::size_t n) override {
    // libssh2 returned the window when we read; all that is left is the buffer.
    if (c_->rx_delivered && n >= c_->rx_len) release_rx();
  }

  // SSH forwards only TCP: no datagram stream is ever opened on it.
  mux::datagram_status try_send_datagram(std::span<const std::byte>) override {
    return mux::datagram_status::failed;
  }

  void reset(errc) override {
    // SSH has no reset: closing the channel is the nearest (the server closes the device
    // socket). Pending operations end with operation_aborted.
    if (!c_->err) core_->abort_channel(*c_);
    release();
  }

 private:
  // Asks the driver to read this channel and notify rx_ev when something arrives.
  void want_rx() {
    c_->rx_want = true;
    core_->arm();
  }

  bool holds_lent_bytes() const noexcept { return c_->rx_delivered && c_->rx_len > 0; }

  void release_rx() {
    if (c_->rx_buf && c_->rx_delivered) {
      core_->pool().give(std::move(c_->rx_buf));
      c_->rx_len = 0;
      c_->rx_delivered = false;
    }
  }

  void release() {
    if (released_) return;
    released_ = true;
    core_->release(c_);
  }

  std::shared_ptr<ssh_core> core_;
  std::shared_ptr<ssh_chan> c_;
  bool released_ = false;
};

class ssh_tunnel final : public mux::tunnel {
 public:
  explicit ssh_tunnel(std::shared_ptr<ssh_core> core) : core_(std::move(core)) {}
  ~ssh_tunnel() override { core_->close("tunnel closed"); }
  ssh_tunnel(const ssh_tunnel&) = delete;
  ssh_tunnel& operator=(const ssh_tunnel&) = delete;

  asio::awaitable<std::pair<asio::error_code, std::unique_ptr<mux::channel>>> open(
      mux::target t) override {
    using out = std::pair<asio::error_code, std::unique_ptr<mux::channel>>;
    if (t.proto != mux::protocol::tcp) co_return out{make_error_code(errc::unsupported), nullptr};
    if (core_->dead()) co_return out{make_error_code(errc::session_lost), nullptr};
    if (t.device.empty() || t.device.size() > 255 || t.port == 0)
      co_return out{make_error_code(errc::unknown_device), nullptr};

    auto core = core_;  // the tunnel may be destroyed while we wait
    auto c = std::make_shared<ssh_chan>(core->executor());
    c->open_host = t.device;
    c->open_port = t.port;
    c->target = t.device + ":" + std::to_string(t.port);
    const auto deadline = std::chrono::steady_clock::now() + core->options().open_timeout;
    core->queue_open(c);
    while (!c->open_done) {
      const auto w = co_await c->tx_ev.wait(deadline);
      if (c->open_done || w == woke::notified) continue;
      core->abandon_open(c);
      if (w == woke::deadline) {
        core->last_open_error = "no answer to the open of " + c->target + " in time";
        co_return out{make_error_code(errc::timed_out), nullptr};
      }
      co_return out{make_error_code(asio::error::operation_aborted), nullptr};
    }
    if (c->open_ec) {
      core->last_open_error = c->open_message;
      spdlog::warn("ssh {}: open of {} refused: {}", core->where(), c->target, c->open_message);
      co_return out{c->open_ec, nullptr};
    }
    spdlog::debug("ssh {}: channel to {} open", core->where(), c->target);
    co_return out{asio::error_code{}, std::make_unique<ssh_channel>(core, c)};
  }

  asio::awaitable<asio::error_code> wait_closed() override {
    auto core = core_;
    co_return co_await core->wait_closed();
  }

  void close() override { core_->close("closed by the client"); }

  std::string last_open_error() const override { return last_error_message(); }

  std::string last_error_message() const {
    if (!core_->last_open_error.empty()) return core_->last_open_error;
    return core_->dead() ? core_->dead_message() : std::string();
  }

 private:
  std::shared_ptr<ssh_core> core_;
};

}  // namespace

std::shared_ptr<mux::tunnel> make_ssh_tunnel(std::shared_ptr<ssh_core> core) {
  return std::make_shared<ssh_tunnel>(std::move(core));
}

}  // namespace detail


}  // namespace tether::transport
