#include "message_channel.hpp"

#include <algorithm>
#include <asio/post.hpp>

namespace tether::server {
namespace {

// The most one send may carry: a reply is read in pieces of this size at most.
constexpr std::size_t max_credit = 64 * 1024;

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

}  // namespace

message_channel::message_channel(asio::any_io_executor ex, std::string payload, bool datagram,
                                 std::size_t max_reply)
    : executor_(std::move(ex)),
      payload_(std::move(payload)),
      datagram_(datagram),
      max_reply_(max_reply) {}

message_channel::~message_channel() {
  // The relay's callback may keep alive what it uses: it runs once more, as the contract says.
  if (receivable_) asio::post(executor_, std::exchange(receivable_, nullptr));
}

asio::awaitable<std::pair<asio::error_code, std::size_t>> message_channel::wait_send_credit() {
  if (failure_) co_return std::pair{failure_, std::size_t{0}};
  if (datagram_) co_return std::pair{make_error_code(errc::unsupported), std::size_t{0}};
  if (room() == 0) {  // more than we keep: the exchange ends here
    truncated_ = true;
    fail(make_error_code(errc::limit_reached));
    co_return std::pair{failure_, std::size_t{0}};
  }
  co_return std::pair{asio::error_code{}, std::min(room(), max_credit)};
}

asio::awaitable<asio::error_code> message_channel::send(std::span<const std::byte> data) {
  if (failure_) co_return failure_;
  if (datagram_) co_return make_error_code(errc::unsupported);
  if (data.empty()) co_return asio::error_code{};
  const auto n = std::min(data.size(), room());
  if (replies_.empty()) replies_.emplace_back();
  replies_.back().append(reinterpret_cast<const char*>(data.data()), n);
  reply_bytes_ += n;
  changed_.notify();
  co_return asio::error_code{};
}

asio::awaitable<asio::error_code> message_channel::send_eof() {
  if (failure_) co_return failure_;
  reply_complete_ = true;
  changed_.notify();
  co_return asio::error_code{};
}

asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>>
message_channel::receive() {
  for (;;) {
    auto r = try_receive();
    if (r.first != asio::error::would_block) co_return r;
    co_await readable_.wait();
  }
}

std::pair<asio::error_code, std::span<const std::byte>> message_channel::try_receive() {
  if (failure_) return {failure_, {}};
  switch (out_) {
    case outbound::payload:
      if (payload_.empty() && !datagram_) {  // nothing to write: straight to end-of-stream
        out_ = outbound::done;
        changed_.notify();
        return {{}, {}};
      }
      [[fallthrough]];
    case outbound::lent:  // lent again: the relay asks before it consumed, as it may
      out_ = outbound::lent;
      return {{}, bytes_of(payload_)};
    case outbound::end_of_stream:
      out_ = outbound::done;
      changed_.notify();
      return {{}, {}};
    case outbound::done:
      break;
  }
  return {asio::error::would_block, {}};
}

void message_channel::when_receivable(std::function<void()> wake) {
  receivable_ = std::move(wake);
  if (failure_ || out_ != outbound::done) wake_receiver();
}

void message_channel::consumed(std::size_t) {
  if (out_ != outbound::lent) return;
  // A datagram is whole once taken; a byte stream ends with end-of-stream, handed over next.
  out_ = datagram_ ? outbound::done : outbound::end_of_stream;
  if (datagram_) changed_.notify();
}

mux::datagram_status message_channel::try_send_datagram(std::span<const std::byte> datagram) {
  if (failure_ || !datagram_) return mux::datagram_status::failed;
  if (datagram.size() > room()) {
    truncated_ = true;
    return mux::datagram_status::no_credit;
  }
  replies_.emplace_back(reinterpret_cast<const char*>(datagram.data()), datagram.size());
  reply_bytes_ += datagram.size();
  changed_.notify();
  return mux::datagram_status::sent;
}

void message_channel::fail(asio::error_code why) {
  if (failure_) return;
  failure_ = why;
  wake_receiver();
  readable_.notify();
  changed_.notify();
}

// The relay's callback runs from the executor, never inline (the channel contract).
void message_channel::wake_receiver() {
  if (auto wake = std::exchange(receivable_, nullptr)) asio::post(executor_, std::move(wake));
  readable_.notify();
}

}  // namespace tether::server
