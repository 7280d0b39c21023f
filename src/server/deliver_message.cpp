#include "deliver_message.hpp"

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/steady_timer.hpp>

#include "message_channel.hpp"

namespace tether::server {
namespace {

// What the relay and this exchange share: the relay coroutine and the timer keep it alive,
// so neither outlives what it touches.
struct exchange {
  exchange(asio::any_io_executor ex, std::unique_ptr<upstream> u, std::string payload,
           bool datagram, std::size_t max_reply)
      : up(std::move(u)), ch(ex, std::move(payload), datagram, max_reply), deadline(ex) {}
  std::unique_ptr<upstream> up;
  message_channel ch;
  asio::steady_timer deadline;
  bool deadline_passed = false;
  bool relay_ended = false;
  relay_outcome relayed;
};

asio::awaitable<void> run_relay(std::shared_ptr<exchange> x) {
  x->relayed = co_await x->up->relay(x->ch);
}

// Ends the exchange now: the relay sees the channel fail, and a TCP upstream whose device
// stays silent after our half-close has its socket closed.
asio::awaitable<void> end_exchange(std::shared_ptr<exchange> x) {
  x->deadline.cancel();
  if (x->relay_ended) co_return;
  x->ch.finish(errc::timed_out);
  x->up->abort();
  while (!x->relay_ended) co_await x->ch.changed().wait();
}

// A TCP message nobody waits a reply for: the caller has its answer, and the connection
// still closes the way the device expects, after its own end-of-stream (what it sends is
// dropped). Only a device that keeps it open past the delivery deadline gets it closed.
asio::awaitable<void> linger(std::shared_ptr<exchange> x) {
  while (!x->relay_ended && !x->deadline_passed) co_await x->ch.changed().wait();
  co_await end_exchange(x);
}

}  // namespace

const char* to_string(message_status s) noexcept {
  switch (s) {
    case message_status::delivered: return "delivered";
    case message_status::refused: return "refused";
    case message_status::unreachable: return "unreachable";
    case message_status::offline: return "offline";
    case message_status::timed_out: return "timed_out";
    case message_status::forbidden: return "forbidden";
    case message_status::unknown_device: return "unknown_device";
    case message_status::failed: return "failed";
  }
  return "failed";
}

message_status message_status_of(errc why) noexcept {
  switch (why) {
    case errc::ok: return message_status::delivered;
    case errc::refused: return message_status::refused;
    case errc::unreachable: return message_status::unreachable;
    case errc::session_lost: return message_status::offline;
    case errc::timed_out: return message_status::timed_out;
    case errc::forbidden: return message_status::forbidden;
    case errc::unknown_device: return message_status::unknown_device;
    default: return message_status::failed;
  }
}

asio::awaitable<message_outcome> deliver_message(const router& routes, message_request request) {
  message_outcome out;
  const bool udp = request.target.proto == mux::protocol::udp;
  auto route = routes.route(request.target, *request.sender);
  if (!route) {
    const bool offline =
        route.code() == errc::unreachable && routes.is_agent_device(request.target.device);
    out.status = offline ? message_status::offline : message_status_of(route.code());
    out.detail = route.message();
    co_return out;
  }
  auto up = std::move(route).value();
  if (const auto refused = co_await up->connect()) {
    out.status = message_status_of(refused->code);
    out.detail = refused->message;
    co_return out;
  }

  const auto ex = co_await asio::this_coro::executor;
  auto x = std::make_shared<exchange>(ex, std::move(up), std::move(request.payload), udp,
                                      request.max_reply);
  asio::co_spawn(ex, run_relay(x), [x](std::exception_ptr) {
    x->relay_ended = true;  // relay() never throws; an exception here is a stopped loop
    x->ch.changed().notify();
  });
  const bool waiting = request.wait.count() > 0;
  x->deadline.expires_after(waiting ? request.wait : request.deliver_timeout);
  x->deadline.async_wait([x](const asio::error_code& ec) {
    if (ec) return;
    x->deadline_passed = true;
    x->ch.changed().notify();
  });

  // The payload goes out; then, if asked, the reply comes in until the device closes (TCP)
  // or the wait is over.
  auto settled = [&] {
    if (x->relay_ended || x->deadline_passed) return true;
    if (!x->ch.delivered()) return false;
    return !waiting || x->ch.reply_complete();
  };
  while (!settled()) co_await x->ch.changed().wait();

  if (!waiting && !udp && x->ch.delivered() && !x->relay_ended && !x->deadline_passed) {
    asio::co_spawn(ex, linger(x), asio::detached);
    out.status = message_status::delivered;
    co_return out;
  }
  co_await end_exchange(x);

  const auto& why = x->relayed.error;
  if (!x->ch.delivered()) {
    out.status = x->deadline_passed ? message_status::timed_out : message_status::refused;
    out.detail = x->deadline_passed ? "the device did not take the message in time"
                                    : "the device closed the connection before taking the message";
  } else if (udp && why == errc::refused) {
    out.status = message_status::refused;  // ICMP port unreachable after the datagram
    out.detail = "the device port is unreachable (ICMP)";
  } else {
    out.status = message_status::delivered;
  }
  out.replies = x->ch.take_replies();
  out.reply_truncated = x->ch.reply_truncated();
  co_return out;
}

}  // namespace tether::server
