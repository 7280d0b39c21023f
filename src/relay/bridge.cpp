#include "tether/relay/bridge.hpp"

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/use_awaitable.hpp>
#include <vector>

namespace tether::relay {
namespace {

// What `to` is told when `from` failed: its reason when it is one of ours.
errc reset_reason(const asio::error_code& ec) {
  if (ec.category() == tether_category()) return static_cast<errc>(ec.value());
  return errc::stream_reset;
}

// Runs `work` on `where`: at once when that is the caller's own executor, else posted
// there, the caller resuming on its own executor when it is done.
template <typename T>
asio::awaitable<T> on(const asio::any_io_executor& here, const asio::any_io_executor& where,
                      asio::awaitable<T> work) {
  if (here == where) co_return co_await std::move(work);
  co_return co_await asio::co_spawn(where, std::move(work), asio::use_awaitable);
}

// Sends all of `data` on `to` as its credit allows. On to's executor.
asio::awaitable<asio::error_code> send_all(mux::channel& to, std::span<const std::byte> data) {
  while (!data.empty()) {
    auto [cec, credit] = co_await to.wait_send_credit();
    if (cec) co_return cec;
    const auto n = std::min(credit, data.size());
    if (auto ec = co_await to.send(data.first(n))) co_return ec;
    data = data.subspan(n);
  }
  co_return asio::error_code{};
}

asio::awaitable<asio::error_code> send_eof(mux::channel& to) {
  co_return co_await to.send_eof();
}

asio::awaitable<int> reset_channel(mux::channel& to, errc why) {
  to.reset(why);
  co_return 0;
}

// The datagram's fate, and the channel's failure when that was it.
asio::awaitable<std::pair<mux::datagram_status, asio::error_code>> send_datagram(
    mux::channel& to, std::span<const std::byte> d) {
  const auto status = to.try_send_datagram(d);
  co_return std::pair{status,
                      status == mux::datagram_status::failed ? to.error() : asio::error_code{}};
}

struct direction_result {
  std::uint64_t bytes = 0;
  datagram_counters datagrams;
  asio::error_code error;
};

// from → to, one received chunk at a time. Runs on from's executor.
asio::awaitable<direction_result> pump(owned_channel from, owned_channel to, bool datagrams) {
  direction_result r;
  const bool same = from.executor == to.executor;
  std::vector<std::byte> carried;  // the chunk handed to to's thread (not used on one thread)
  for (;;) {
    auto [rec, bytes] = co_await from.ch.receive();
    if (rec) {
      r.error = rec;
      co_await on(from.executor, to.executor, reset_channel(to.ch, reset_reason(rec)));
      co_return r;
    }
    if (!datagrams && bytes.empty()) {  // the sender half-closed
      if (auto ec = co_await on(from.executor, to.executor, send_eof(to.ch))) {
        r.error = ec;
        from.ch.reset(reset_reason(ec));
      }
      co_return r;
    }
    auto out = bytes;
    if (!same) {
      carried.assign(bytes.begin(), bytes.end());
      out = carried;
    }
    if (datagrams) {
      const auto [status, failure] =
          co_await on(from.executor, to.executor, send_datagram(to.ch, out));
      from.ch.consumed(bytes.size());  // delivered or dropped, its credit goes back
      r.datagrams.count_send(status, bytes.size());
      if (status == mux::datagram_status::sent) r.bytes += bytes.size();
      if (status == mux::datagram_status::failed) {
        r.error = failure ? failure : make_error_code(errc::stream_reset);
        from.ch.reset(reset_reason(r.error));
        co_return r;
      }
      continue;
    }
    if (auto ec = co_await on(from.executor, to.executor, send_all(to.ch, out))) {
      r.error = ec;
      from.ch.reset(reset_reason(ec));
      co_return r;
    }
    // Only now does the sender get its window back: the other side has taken the bytes.
    from.ch.consumed(bytes.size());
    r.bytes += bytes.size();
  }
}

}  // namespace

asio::awaitable<bridge_result> bridge(owned_channel a, owned_channel b, bool datagrams) {
  using namespace asio::experimental::awaitable_operators;
  // Each direction runs on the executor of the channel it receives from, and hands what it
  // received to the other one's. Neither throws, so `&&` waits for both.
  auto [ab, ba] =
      co_await (pump(a, b, datagrams) && on(a.executor, b.executor, pump(b, a, datagrams)));
  bridge_result r;
  r.a_to_b = ab.bytes;
  r.b_to_a = ba.bytes;
  r.datagrams.from_channel = ab.datagrams.to_channel;
  r.datagrams.bytes_from_channel = ab.datagrams.bytes_to_channel;
  r.datagrams.to_channel = ba.datagrams.to_channel;
  r.datagrams.bytes_to_channel = ba.datagrams.bytes_to_channel;
  for (std::size_t i = 0; i < drop_reason_count; ++i)
    r.datagrams.dropped[i] = ab.datagrams.dropped[i] + ba.datagrams.dropped[i];
  r.error = ab.error ? ab.error : ba.error;
  co_return r;
}

}  // namespace tether::relay
