#pragma once
// A channel that counts the bytes going through it into its mapping's totals, so that
// `tether map ls` shows a transfer while it runs rather than only once it has ended.
// Everything else passes straight to the channel it wraps; the relay never sees the
// difference.

#include <atomic>
#include <cstdint>
#include <memory>

#include "tether/mux/channel.hpp"

namespace tether::client {

// Atomic: a connection that moved to the bulk lane counts from the lane's thread.
struct byte_totals {
  std::atomic<std::uint64_t> out{0};  // handed to the tunnel, toward the device
  std::atomic<std::uint64_t> in{0};   // received from the tunnel and delivered to the local socket
};

class counting_channel final : public mux::channel {
 public:
  /// `totals` must outlive this channel.
  counting_channel(std::unique_ptr<mux::channel> inner, byte_totals& totals)
      : inner_(std::move(inner)), totals_(totals) {}

  asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() override {
    return inner_->wait_send_credit();
  }
  // Counted when handed over: not wrapping the call in a coroutine of our own saves a
  // frame per send. A send that then fails ends the stream, so the count is off by at
  // most one frame of a connection that failed.
  asio::awaitable<asio::error_code> send(std::span<const std::byte> data) override {
    totals_.out.fetch_add(data.size(), std::memory_order_relaxed);
    return inner_->send(data);
  }
  asio::awaitable<asio::error_code> send_eof() override { return inner_->send_eof(); }
  asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() override {
    return inner_->receive();
  }
  std::pair<asio::error_code, std::span<const std::byte>> try_receive() override {
    return inner_->try_receive();
  }
  void when_receivable(std::function<void()> wake) override {
    inner_->when_receivable(std::move(wake));
  }
  void consumed(std::size_t n) override {
    totals_.in.fetch_add(n, std::memory_order_relaxed);
    inner_->consumed(n);
  }
  mux::datagram_status try_send_datagram(std::span<const std::byte> d) override {
    return inner_->try_send_datagram(d);
  }
  bool can_move() const noexcept override { return inner_->can_move(); }
  asio::awaitable<asio::error_code> send_move(const wire::move_token& token) override {
    return inner_->send_move(token);
  }
  std::optional<wire::move_token> moved_away() const override { return inner_->moved_away(); }
  void reset(errc reason) override { inner_->reset(reason); }
  asio::error_code error() const noexcept override { return inner_->error(); }

 private:
  std::unique_ptr<mux::channel> inner_;
  byte_totals& totals_;
};

}  // namespace tether::client
