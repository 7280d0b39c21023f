#pragma once
// An in-memory mux::channel that stands for an API message: it hands the payload to the
// relay (then end-of-stream for TCP) and keeps what the device sends back, bounded. The
// upstream relays through it exactly as through a tunnel stream, so an API message reaches
// every kind of device the tunnels reach, with no dialer of its own.
//
// Single-threaded: everything runs on the executor it was made with (a worker's).

#include <asio/any_io_executor.hpp>
#include <functional>
#include <string>
#include <vector>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/channel.hpp"

namespace tether::server {

class message_channel final : public mux::channel {
 public:
  /// `datagram`: a UDP flow (the payload is one datagram, each reply one datagram).
  message_channel(asio::any_io_executor ex, std::string payload, bool datagram,
                  std::size_t max_reply);
  ~message_channel() override;

  /// The payload went out: TCP, it was written and end-of-stream handed over; UDP, the
  /// datagram was taken for sending.
  bool delivered() const noexcept { return out_ == outbound::done; }
  /// TCP: the device closed its side, the reply is complete.
  bool reply_complete() const noexcept { return reply_complete_; }
  bool reply_truncated() const noexcept { return truncated_; }
  std::vector<std::string> take_replies() { return std::move(replies_); }

  /// Notified on every change above and on failure; one waiter.
  mux::async_signal& changed() noexcept { return changed_; }

  /// Ends the exchange: the relay's pending and next calls fail with `why`.
  void finish(errc why) { fail(make_error_code(why)); }

  // mux::channel
  asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() override;
  asio::awaitable<asio::error_code> send(std::span<const std::byte> data) override;
  asio::awaitable<asio::error_code> send_eof() override;
  asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() override;
  std::pair<asio::error_code, std::span<const std::byte>> try_receive() override;
  void when_receivable(std::function<void()> wake) override;
  void consumed(std::size_t n) override;
  mux::datagram_status try_send_datagram(std::span<const std::byte> datagram) override;
  void reset(errc reason) override { finish(reason); }
  asio::error_code error() const noexcept override { return failure_; }

 private:
  enum class outbound { payload, lent, end_of_stream, done };

  std::size_t room() const noexcept { return max_reply_ - reply_bytes_; }
  void fail(asio::error_code why);
  void wake_receiver();

  asio::any_io_executor executor_;
  std::string payload_;
  bool datagram_;
  std::size_t max_reply_;
  outbound out_ = outbound::payload;
  std::vector<std::string> replies_;
  std::size_t reply_bytes_ = 0;
  bool reply_complete_ = false;
  bool truncated_ = false;
  asio::error_code failure_;
  std::function<void()> receivable_;  // the relay's when_receivable() callback
  mux::async_signal readable_;        // receive() waits on it
  mux::async_signal changed_;
};

}  // namespace tether::server
