#include "agent_upstream.hpp"

#include <asio/co_spawn.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>

#include "tether/mux/session.hpp"
#include "tether/relay/bridge.hpp"

namespace tether::server {
namespace {

struct opened {
  asio::error_code ec;
  std::unique_ptr<mux::channel> stream;
  std::string message;  // the agent's words for a refusal, or why the agent is gone
};

// On the agent's executor: opens the stream on its session.
asio::awaitable<opened> open_on_agent(std::shared_ptr<const agent_link> link, mux::target t) {
  opened out;
  const auto session = link->session.lock();
  if (!session || session->closed()) {
    out.ec = make_error_code(errc::unreachable);
    out.message = "device " + link->device + " is offline (its agent's session has just ended)";
    co_return out;
  }
  auto [ec, stream] = co_await session->open(std::move(t));
  out.ec = ec;
  out.stream = std::move(stream);
  if (ec) out.message = session->last_open_error();
  co_return out;
}

// What the client is told of an open the agent's session could not make. Outcomes of the
// open itself pass through; anything about the agent's session (it ended, it is going away,
// an error of its connection) means the device is offline now. Passed through, those would
// speak of the client's own session, which is fine, and make it drop that session.
errc refusal_for_client(const asio::error_code& ec) {
  if (ec.category() != tether_category()) return errc::unreachable;
  switch (const auto code = static_cast<errc>(ec.value())) {
    case errc::unknown_device:
    case errc::forbidden:
    case errc::refused:
    case errc::unreachable:
    case errc::timed_out:
    case errc::too_many_streams:
    case errc::limit_reached:
    case errc::unsupported:
    case errc::internal:
      return code;
    default:
      return errc::unreachable;
  }
}

}  // namespace

agent_upstream::agent_upstream(asio::any_io_executor own, std::shared_ptr<const agent_link> link,
                               mux::target target)
    : own_(std::move(own)), link_(std::move(link)), target_(std::move(target)) {}

agent_upstream::~agent_upstream() {
  if (stream_) asio::post(link_->executor, [s = std::move(stream_)] {});
}

void agent_upstream::abort() {
  // The stream is destroyed by a post to the same executor, after this one.
  if (stream_) asio::post(link_->executor, [s = stream_.get()] { s->reset(errc::stream_reset); });
}

asio::awaitable<std::optional<refusal>> agent_upstream::connect() {
  auto t = target_;
  auto r = co_await asio::co_spawn(link_->executor, open_on_agent(link_, std::move(t)),
                                   asio::use_awaitable);
  if (!r.ec) {
    stream_ = std::move(r.stream);
    co_return std::nullopt;
  }
  const auto code = refusal_for_client(r.ec);
  const auto where = "device " + target_.device + " port " + std::to_string(target_.port);
  auto message = r.message.empty() ? where + ": " + r.ec.message() : r.message;
  if (code == errc::unreachable && r.message.empty())
    message = "device " + target_.device + " is offline (its agent's session ended: " +
              r.ec.message() + ")";
  auto detail = where + " through its agent (" + link_->peer + "): " + message;
  co_return refusal{code, std::move(message), std::move(detail)};
}

asio::awaitable<relay_outcome> agent_upstream::relay(mux::channel& ch) {
  const bool datagrams = target_.proto == mux::protocol::udp;
  const auto r = co_await relay::bridge({ch, own_}, {*stream_, link_->executor}, datagrams);
  relay_outcome out;
  out.bytes_to_device = r.a_to_b;
  out.bytes_from_device = r.b_to_a;
  out.datagrams = r.datagrams;
  out.error = r.error;
  co_return out;
}

}  // namespace tether::server
