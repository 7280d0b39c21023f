#pragma once
// Two connected in-memory byte streams for session tests: what one writes, the other reads.
// A pipe may be given a capacity per direction, like a socket's buffers: past it write()
// waits until the reader takes bytes, so a reader that stops reading stops its writer.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/byte_stream.hpp"

namespace tether::mux::testing {

// One direction of a pipe.
struct pipe_half_state {
  std::deque<std::byte> bytes;
  bool closed = false;         // the writing end closed: the reader sees EOF after `bytes`
  bool reader_closed = false;  // the reading end closed: writes fail with broken_pipe
  std::size_t capacity = 0;    // bytes buffered before write() waits; 0: no limit
  async_signal wake;           // the reader's: bytes arrived or the writer closed
  async_signal space;          // the writer's: the reader took bytes or closed

  std::size_t room() const noexcept {
    if (capacity == 0) return SIZE_MAX;
    return capacity - std::min(capacity, bytes.size());
  }
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
    in_->space.notify();
    co_return std::pair{asio::error_code{}, n};
  }

  // Copies as much as the capacity allows, then waits for the reader to make room.
  asio::awaitable<asio::error_code> write(asio::const_buffer data) override {
    auto p = static_cast<const std::byte*>(data.data());
    auto left = data.size();
    for (bool waited = false;; waited = true) {
      if (closed_ && waited) co_return make_error_code(asio::error::operation_aborted);
      if (closed_ || out_->closed || out_->reader_closed)
        co_return make_error_code(asio::error::broken_pipe);
      const auto n = std::min(left, out_->room());
      out_->bytes.insert(out_->bytes.end(), p, p + n);
      p += n;
      left -= n;
      if (n > 0) out_->wake.notify();
      if (left == 0) co_return asio::error_code{};
      co_await out_->space.wait();
    }
  }

  asio::awaitable<void> shutdown() override {
    close();
    co_return;
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    out_->closed = true;
    in_->reader_closed = true;
    out_->wake.notify();
    out_->space.notify();  // our own write, if one waits for room
    in_->wake.notify();
    in_->space.notify();  // the peer's write, if one waits for room
  }

  std::string peer() const override { return "memory"; }

 private:
  asio::any_io_executor ex_;
  std::shared_ptr<pipe_half_state> in_, out_;
  bool closed_ = false;
};

// Both ends of a pipe, and its two directions for tests that look inside.
struct pipe_ends {
  std::unique_ptr<byte_stream> a, b;
  std::shared_ptr<pipe_half_state> a_to_b, b_to_a;
};

// A pipe holding at most `capacity` bytes per direction (0: no limit).
inline pipe_ends make_bounded_pipe(asio::any_io_executor ex, std::size_t capacity) {
  auto a_to_b = std::make_shared<pipe_half_state>();
  auto b_to_a = std::make_shared<pipe_half_state>();
  a_to_b->capacity = capacity;
  b_to_a->capacity = capacity;
  return {std::make_unique<memory_stream>(ex, b_to_a, a_to_b),
          std::make_unique<memory_stream>(ex, a_to_b, b_to_a), a_to_b, b_to_a};
}

inline std::pair<std::unique_ptr<byte_stream>, std::unique_ptr<byte_stream>> make_pipe(
    asio::any_io_executor ex) {
  auto p = make_bounded_pipe(ex, 0);
  return {std::move(p.a), std::move(p.b)};
}

}  // namespace tether::mux::testing
