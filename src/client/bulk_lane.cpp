#include "bulk_lane.hpp"

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "tether/mux/use_tuple.hpp"

namespace tether::client {

using namespace asio::experimental::awaitable_operators;

struct bulk_lane::carried {
  explicit carried(asio::any_io_executor ex) : sock(ex) {}
  asio::ip::tcp::socket sock;
  std::unique_ptr<mux::channel> ch;
  bool cut = false;
};

bulk_lane::bulk_lane(lane_dialer make_dialer, std::string server)
    : work_(io_.get_executor()),
      dial_(make_dialer(io_.get_executor())),
      server_(std::move(server)) {}

bulk_lane::~bulk_lane() { stop(); }

bool bulk_lane::ready() {
  if (!started_) start();
  return ready_.load(std::memory_order_relaxed);
}

void bulk_lane::start() {
  started_ = true;
  asio::co_spawn(io_, keep_up(), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
}

void bulk_lane::stop() {
  started_ = true;  // a stopped lane stays stopped
  stopped_ = true;
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    stopping_ = true;
    ready_ = false;
    stop_signal_.notify();
    if (session_) session_->close();
    session_.reset();
  });
  work_.reset();
  thread_.join();
}

asio::awaitable<void> bulk_lane::keep_up() {
  std::chrono::milliseconds delay{250};
  bool said = false;  // a failing lane is said once, not at every retry
  while (!stopping_) {
    auto dialed = co_await (dial_() || stop_signal_.wait());
    if (dialed.index() == 1) co_return;
    auto outcome = std::move(std::get<0>(dialed));
    if (stopping_) {
      if (outcome.tunnel) outcome.tunnel->close();
      co_return;
    }
    if (outcome.tunnel) {
      session_ = std::move(outcome.tunnel);
      ready_ = true;
      delay = std::chrono::milliseconds(250);
      if (said) spdlog::info("bulk lane to {} up again", server_);
      said = false;
      spdlog::debug("bulk lane to {} up", server_);
      auto ended = co_await (session_->wait_closed() || stop_signal_.wait());
      ready_ = false;
      if (ended.index() == 1) co_return;  // stop() closes it
      // Streams moved to it keep a session that went away alive through their channels.
      session_.reset();
    } else if (!said) {
      said = true;
      spdlog::warn("bulk lane to {}: {}; streams stay on the first session until it is up",
                   server_, outcome.sentence(server_));
    }
    asio::steady_timer pause(io_, delay);
    auto woke = co_await (pause.async_wait(use_tuple) || stop_signal_.wait());
    if (woke.index() == 1) co_return;
    delay = std::min(delay * 2, std::chrono::milliseconds(30000));
  }
}

std::shared_ptr<bulk_lane::carried> bulk_lane::make_carried() {
  return std::make_shared<carried>(io_.get_executor());
}

asio::awaitable<relay::splice_result> bulk_lane::carry(std::shared_ptr<carried> c,
                                                       relay::detached_socket connection,
                                                       wire::move_token token,
                                                       byte_totals& totals) {
  if (stopped_) {  // nothing runs there any more: the connection closes with a reset
    relay::splice_result r;
    r.error = make_error_code(errc::session_lost);
    co_return r;
  }
  co_return co_await asio::co_spawn(
      io_, carry_here(std::move(c), std::move(connection), token, totals), asio::use_awaitable);
}

asio::awaitable<relay::splice_result> bulk_lane::carry_here(std::shared_ptr<carried> c,
                                                            relay::detached_socket connection,
                                                            wire::move_token token,
                                                            byte_totals& totals) {
  relay::splice_result r;
  // Without a session here the stream is lost: the connection closes with a reset.
  const auto tunnel = session_;
  if (!tunnel || c->cut) {
    r.error = make_error_code(errc::session_lost);
    spdlog::warn("a stream moving to the bulk lane to {} was lost: the lane is down", server_);
    co_return r;
  }
  mux::target t;
  t.resume = token;
  auto [ec, ch] = co_await tunnel->open(t);
  if (ec || c->cut) {
    r.error = ec ? ec : make_error_code(errc::stream_reset);
    if (ec)
      spdlog::warn("a stream moving to the bulk lane to {} was lost: {}{}", server_, ec.message(),
                   tunnel->last_open_error().empty() ? "" : " (" + tunnel->last_open_error() + ")");
    if (ch) ch->reset(errc::stream_reset);
    co_return r;
  }
  if (const auto aec = connection.attach_to(c->sock)) {
    r.error = aec;
    ch->reset(errc::stream_reset);
    co_return r;
  }
  c->ch = std::make_unique<counting_channel>(std::move(ch), totals);
  r = co_await relay::splice(c->sock, *c->ch, pool_);
  c->ch.reset();  // on this thread, where its session lives
  co_return r;
}

void bulk_lane::cut(const std::shared_ptr<carried>& c) {
  asio::post(io_, [c] {
    c->cut = true;
    if (c->ch) c->ch->reset(errc::stream_reset);
    relay::abort_socket(c->sock);
  });
}

}  // namespace tether::client
