#pragma once
// Two connected in-memory byte streams for session tests: what one writes, the other reads.

#include <deque>
#include <memory>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/byte_stream.hpp"

namespace tether::mux::testing {

struct pipe_half_state {
  std::deque<std::byte> bytes;
  bool closed = false;
  async_signal wake;
};

class memory_stream final : public byte_stream {
 public:
  memory_stream(asio::any_io_executor ex, std::shared_ptr<pipe_half_state> in,
                std::shared_ptr<pipe_half_state> out)
      : ex_(ex), in_(std::move(in)), out_(std::move(out)) {}
  ~memory_stream() override { close(); }

  asio::any_io_executor get_executor() override { return ex_; }

  asio::awaitable<std::pair<asio::error_code, std::size_t>> read_some(
      asio::mutable_buffer buf) override {
    while (in_->bytes.empty() && !in_->closed && !closed_) co_await in_->wake.wait();
    if (closed_) co_return std::pair{make_error_code(asio::error::operation_aborted), 0};
    if (in_->bytes.empty()) co_return std::pair{make_error_code(asio::error::eof), 0};
    const auto n = std::min(buf.size(), in_->bytes.size());
    std::copy_n(in_->bytes.begin(), n, static_cast<std::byte*>(buf.data()));
    in_->bytes.erase(in_->bytes.begin(), in_->bytes.begin() + n);
    co_return std::pair{asio::error_code{}, n};
  }

  asio::awaitable<asio::error_code> write(asio::const_buffer data) override {
    if (closed_ || out_->closed) co_return make_error_code(asio::error::broken_pipe);
    auto p = static_cast<const std::byte*>(data.data());
    out_->bytes.insert(out_->bytes.end(), p, p + data.size());
    out_->wake.notify();
    co_return asio::error_code{};
  }

  asio::awaitable<void> shutdown() override {
    close();
    co_return;
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    out_->closed = true;
    out_->wake.notify();
    in_->wake.notify();
  }

  std::string peer() const override { return "memory"; }

 private:
  asio::any_io_executor ex_;
  std::shared_ptr<pipe_half_state> in_, out_;
  bool closed_ = false;
};

inline std::pair<std::unique_ptr<byte_stream>, std::unique_ptr<byte_stream>> make_pipe(
    asio::any_io_executor ex) {
  auto a = std::make_shared<pipe_half_state>();
  auto b = std::make_shared<pipe_half_state>();
  return {std::make_unique<memory_stream>(ex, a, b), std::make_unique<memory_stream>(ex, b, a)};
}

}  // namespace tether::mux::testing
