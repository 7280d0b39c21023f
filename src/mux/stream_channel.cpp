#include "stream_channel.hpp"

#include <algorithm>
#include <asio/error.hpp>

namespace tether::mux {
namespace {
// What sending after send_eof() gets, as from a socket after shutdown(SHUT_WR).
asio::error_code shut_down() { return make_error_code(asio::error::shut_down); }
// What the byte-stream calls return on a datagram stream.
asio::error_code not_a_byte_stream() { return make_error_code(errc::unsupported); }
}  // namespace

stream_channel::~stream_channel() {
  auto& st = *stream_;
  if (st.state == stream_state::phase::done) return;  // already forgotten
  if (!st.failure && !st.finished())
    session_->queue(wire::reset{st.id, static_cast<std::uint8_t>(errc::stream_reset),
                                st.datagrams ? "flow closed" : "closed before the end of the stream"});
  session_->forget(st);
}

asio::awaitable<std::pair<asio::error_code, std::size_t>> stream_channel::wait_send_credit() {
  auto& st = *stream_;
  auto& s = *session_;
  if (st.datagrams) co_return std::pair{not_a_byte_stream(), std::size_t{0}};
  for (;;) {
    if (st.failure) co_return std::pair{st.failure, std::size_t{0}};
    if (st.fin_pending || st.fin_sent) co_return std::pair{shut_down(), std::size_t{0}};
    // One send() may carry max_send_size; the session cuts it into frames. Big sends mean
    // few syscalls per byte on the local socket.
    const auto credit = std::min<std::int64_t>(
        {st.send_credit, s.send_credit_, static_cast<std::int64_t>(max_send_size)});
    if (credit > 0 && (st.charged || s.can_charge())) {
      // Reserve it now: other streams may spend session credit while our caller reads.
      st.send_credit -= credit;
      s.send_credit_ -= credit;
      st.reserved += static_cast<std::size_t>(credit);
      s.charge(st);
      co_return std::pair{asio::error_code{}, static_cast<std::size_t>(credit)};
    }
    // The session's credit or its output budget is out: wait for either to come back.
    if (st.send_credit > 0) s.credit_waiters_.push_back(stream_);
    co_await st.send_wake.wait();
  }
}

asio::awaitable<asio::error_code> stream_channel::send(std::span<const std::byte> data) {
  auto& st = *stream_;
  if (st.failure) co_return st.failure;
  if (st.datagrams) co_return not_a_byte_stream();
  if (st.fin_pending || st.fin_sent) {  // no DATA after our FIN: the peer would end the session
    session_->release_charge(st);
    co_return shut_down();
  }
  const auto used = std::min(data.size(), st.reserved);
  session_->refund_send_credit(st, st.reserved - used);
  st.reserved = 0;
  if (used == 0) {
    session_->release_charge(st);
    co_return asio::error_code{};
  }
  asio::error_code ec;
  if (session_->can_write_inline()) {
    ec = co_await session_->write_inline(st, data.first(used));
  } else {
    st.pending = data.first(used);
    session_->schedule(stream_);
    while (!st.pending.empty() && !st.failure) co_await st.send_wake.wait();
    st.pending = {};
    ec = st.failure;
  }
  // The caller's buffer is free again: its place in the output budget goes to the next.
  session_->release_charge(st);
  co_return ec;
}

asio::awaitable<asio::error_code> stream_channel::send_eof() {
  auto& st = *stream_;
  session_->refund_send_credit(st, st.reserved);
  st.reserved = 0;
  session_->release_charge(st);
  if (st.failure) co_return st.failure;
  if (st.datagrams) co_return not_a_byte_stream();
  if (st.fin_sent || st.fin_pending) co_return asio::error_code{};
  st.fin_pending = true;
  session_->schedule(stream_);
  while (st.fin_pending && !st.failure) co_await st.send_wake.wait();
  if (st.failure) co_return st.failure;
  if (st.finished()) session_->forget(st);
  co_return asio::error_code{};
}

asio::awaitable<asio::error_code> stream_channel::send_move(const wire::move_token& token) {
  auto& st = *stream_;
  if (!st.movable) co_return make_error_code(errc::unsupported);
  if (st.fin_sent || st.fin_pending) co_return shut_down();  // nothing left to move
  st.move_out = token;
  st.move_pending = true;  // send_eof() queues a MOVE where it would queue the FIN
  co_return co_await send_eof();
}

std::pair<asio::error_code, std::span<const std::byte>> stream_channel::try_receive() {
  auto& st = *stream_;
  if (!st.inbound.empty()) {
    st.front_handed_out = true;
    return {asio::error_code{}, std::span<const std::byte>(st.inbound.front())};
  }
  if (st.failure) return {st.failure, {}};
  if (st.fin_received) {
    if (st.finished() && st.state != stream_state::phase::done) session_->forget(st);
    return {asio::error_code{}, {}};
  }
  return {asio::error::would_block, {}};
}

asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>>
stream_channel::receive() {
  for (;;) {
    auto got = try_receive();
    if (got.first != asio::error::would_block) co_return got;
    co_await stream_->receive_wake.wait();
  }
}

void stream_channel::when_receivable(std::function<void()> wake) {
  stream_->receive_wake.on_notify(session_->executor_, std::move(wake));
}

void stream_channel::consumed(std::size_t n) {
  auto& st = *stream_;
  if (st.inbound.empty() || !st.front_handed_out) return;
  n = st.inbound.front().size();  // receive() hands out whole chunks
  session_->give_back_chunk(std::move(st.inbound.front()));
  st.inbound.erase(st.inbound.begin());
  st.front_handed_out = false;
  if (st.state == stream_state::phase::done) return;  // the session already took the credit
  session_->deliver_credit(st, n);
}

datagram_status stream_channel::try_send_datagram(std::span<const std::byte> datagram) {
  auto& st = *stream_;
  auto& s = *session_;
  if (st.failure || !st.datagrams || st.state != stream_state::phase::open)
    return datagram_status::failed;
  if (datagram.size() > wire::max_datagram) return datagram_status::too_large;
  const auto n = static_cast<std::int64_t>(datagram.size());
  if (st.send_credit < n || s.send_credit_ < n) return datagram_status::no_credit;
  if (!s.can_queue_datagram(st, datagram.size())) return datagram_status::backlogged;
  st.send_credit -= n;
  s.send_credit_ -= n;
  s.queue_datagram(stream_, datagram);
  return datagram_status::sent;
}

void stream_channel::reset(errc reason) {
  auto& st = *stream_;
  if (st.state == stream_state::phase::done) return;
  if (!st.failure)
    session_->queue(wire::reset{st.id, static_cast<std::uint8_t>(reason), describe(reason)});
  st.fail(make_error_code(reason));
  session_->forget(st);
}

}  // namespace tether::mux
