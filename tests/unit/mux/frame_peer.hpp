#pragma once
// A raw end of a memory pipe that a test drives frame by frame, standing in for a peer that
// misbehaves: it writes whatever frames (or bytes) the test encodes, valid or not, and reads
// and decodes what the session sends. It reads only when told to, so it can also be a peer
// that never reads.

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/byte_stream.hpp"
#include "tether/wire/codec.hpp"

namespace tether::mux::testing {

// One frame the session sent, with its own copy of the bytes it was decoded from.
struct seen_frame {
  std::vector<std::byte> bytes;

  // Decodes again on every call: the frame refers into `bytes`, so it is valid while this is.
  wire::frame value() const { return wire::decode(bytes).value; }
  template <class T>
  std::optional<T> as() const {
    auto v = value();
    if (auto* p = std::get_if<T>(&v)) return *p;
    return std::nullopt;
  }
};

inline std::vector<std::byte> encoded(std::initializer_list<wire::frame> frames) {
  std::vector<std::byte> out;
  for (const auto& f : frames) wire::encode(f, out);
  return out;
}

// No bytes: a step of a test case that sends nothing.
inline std::vector<std::byte> nothing() {
  return {};
}

class frame_peer : public std::enable_shared_from_this<frame_peer> {
 public:
  explicit frame_peer(std::unique_ptr<byte_stream> s) : stream_(std::move(s)) {}

  static std::shared_ptr<frame_peer> make(std::unique_ptr<byte_stream> s) {
    return std::make_shared<frame_peer>(std::move(s));
  }

  // ---- writing: everything goes through one queue, written in order in the background.

  void send(const wire::frame& f) {
    wire::encode(f, queued_);
    start_writer();
  }
  void send_bytes(std::span<const std::byte> b) {
    queued_.insert(queued_.end(), b.begin(), b.end());
    start_writer();
  }
  // Writes `batch` again and again until a write fails: a peer that floods.
  void flood(std::vector<std::byte> batch) {
    auto self = shared_from_this();
    asio::co_spawn(
        stream_->get_executor(),
        [self, batch = std::move(batch)]() -> asio::awaitable<void> {
          self->flooding_ = true;
          for (;;) {
            self->writing_ = true;
            const auto ec = co_await self->stream_->write(asio::buffer(batch));
            self->writing_ = false;
            if (ec) {
              self->write_error_ = ec;
              break;
            }
            self->bytes_written_ += batch.size();
          }
          self->flooding_ = false;
        },
        asio::detached);
  }

  bool writing() const noexcept { return writing_; }  // a write waits for the pipe
  bool flooding() const noexcept { return flooding_; }
  std::uint64_t bytes_written() const noexcept { return bytes_written_; }  // whole writes
  asio::error_code write_error() const noexcept { return write_error_; }

  // ---- reading: exactly one frame at a time, so bytes not asked for stay in the pipe.

  // Reads frames in the background until the end of the stream; `on_frame` (may be empty)
  // sees each one after it is recorded, and may send().
  void read_all(std::function<void(const seen_frame&)> on_frame = {}) {
    on_frame_ = std::move(on_frame);
    auto self = shared_from_this();
    asio::co_spawn(
        stream_->get_executor(),
        [self]() -> asio::awaitable<void> {
          while (co_await self->read_one()) {
            while (self->paused_) co_await self->resume_.wait();
          }
        },
        asio::detached);
  }

  // Stops read_all() after the frame being handled (call it from `on_frame` to stop at an
  // exact frame); what follows stays in the pipe until resume_reading().
  void pause_reading() { paused_ = true; }
  void resume_reading() {
    paused_ = false;
    resume_.notify();
  }

  // Reads one frame in the background.
  void read_next() {
    auto self = shared_from_this();
    asio::co_spawn(
        stream_->get_executor(), [self]() -> asio::awaitable<void> { co_await self->read_one(); },
        asio::detached);
  }

  const std::vector<seen_frame>& frames() const noexcept { return frames_; }
  // True once a read found the end of the stream (EOF, or an error in read_error()).
  bool ended() const noexcept { return ended_; }
  asio::error_code read_error() const noexcept { return read_error_; }

  // The frames of one type that the session sent, in order.
  template <class T>
  std::vector<T> all() const {
    std::vector<T> out;
    for (const auto& f : frames_)
      if (auto x = f.as<T>()) out.push_back(*x);
    return out;
  }

  void close() { stream_->close(); }

 private:
  void start_writer() {
    if (writer_running_) return;
    writer_running_ = true;
    auto self = shared_from_this();
    asio::co_spawn(
        stream_->get_executor(),
        [self]() -> asio::awaitable<void> {
          std::vector<std::byte> buf;
          while (!self->queued_.empty() && !self->write_error_) {
            buf.clear();
            std::swap(buf, self->queued_);
            self->writing_ = true;
            const auto ec = co_await self->stream_->write(asio::buffer(buf));
            self->writing_ = false;
            if (ec)
              self->write_error_ = ec;
            else
              self->bytes_written_ += buf.size();
          }
          self->writer_running_ = false;
        },
        asio::detached);
  }

  // Reads exactly one frame's bytes (header, then its length) and records the frame.
  // False at the end of the stream or on a frame that does not decode.
  asio::awaitable<bool> read_one() {
    if (ended_) co_return false;
    seen_frame f;
    f.bytes.resize(wire::header_size);
    if (!co_await read_exactly(std::span(f.bytes))) co_return false;
    const std::size_t len = (std::to_integer<std::size_t>(f.bytes[0]) << 16) |
                            (std::to_integer<std::size_t>(f.bytes[1]) << 8) |
                            std::to_integer<std::size_t>(f.bytes[2]);
    f.bytes.resize(wire::header_size + len);
    if (!co_await read_exactly(std::span(f.bytes).subspan(wire::header_size))) co_return false;
    if (wire::decode(f.bytes).status != wire::decode_status::complete) {
      ended_ = true;
      read_error_ = make_error_code(errc::protocol_error);
      co_return false;
    }
    frames_.push_back(std::move(f));
    if (on_frame_) on_frame_(frames_.back());
    co_return true;
  }

  asio::awaitable<bool> read_exactly(std::span<std::byte> out) {
    while (!out.empty()) {
      auto [ec, n] = co_await stream_->read_some(asio::buffer(out.data(), out.size()));
      if (ec) {
        ended_ = true;
        if (ec != asio::error::eof) read_error_ = ec;
        co_return false;
      }
      out = out.subspan(n);
    }
    co_return true;
  }

  std::unique_ptr<byte_stream> stream_;
  std::vector<std::byte> queued_;
  bool writer_running_ = false;
  bool writing_ = false;
  bool flooding_ = false;
  std::uint64_t bytes_written_ = 0;
  asio::error_code write_error_;
  std::vector<seen_frame> frames_;
  std::function<void(const seen_frame&)> on_frame_;
  bool paused_ = false;
  async_signal resume_;
  bool ended_ = false;
  asio::error_code read_error_;
};

}  // namespace tether::mux::testing
