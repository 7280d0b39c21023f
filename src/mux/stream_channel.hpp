#pragma once
// A session's stream seen as a channel: what the relay reads from and writes to.

#include <memory>

#include "stream_state.hpp"
#include "tether/mux/channel.hpp"
#include "tether/mux/session.hpp"

namespace tether::mux {

class stream_channel final : public channel {
 public:
  stream_channel(std::shared_ptr<session> s, std::shared_ptr<stream_state> st)
      : session_(std::move(s)), stream_(std::move(st)) {}
  /// Resets the stream unless both directions finished cleanly.
  ~stream_channel() override;

  asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() override;
  asio::awaitable<asio::error_code> send(std::span<const std::byte> data) override;
  asio::awaitable<asio::error_code> send_eof() override;
  asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() override;
  std::pair<asio::error_code, std::span<const std::byte>> try_receive() override;
  void when_receivable(std::function<void()> wake) override;
  void consumed(std::size_t n) override;
  datagram_status try_send_datagram(std::span<const std::byte> datagram) override;
  bool can_move() const noexcept override { return stream_->movable && !stream_->failure; }
  asio::awaitable<asio::error_code> send_move(const wire::move_token& token) override;
  std::optional<wire::move_token> moved_away() const override { return stream_->moved_in; }
  void reset(errc reason) override;
  asio::error_code error() const noexcept override { return stream_->failure; }

 private:
  std::shared_ptr<session> session_;
  std::shared_ptr<stream_state> stream_;
};

}  // namespace tether::mux
