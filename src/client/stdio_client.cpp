#include "tether/client/stdio_client.hpp"

#include <spdlog/spdlog.h>

#include <asio/experimental/awaitable_operators.hpp>

namespace tether::client {
namespace {

using stage = stdio_outcome::stage;
using namespace asio::experimental::awaitable_operators;

std::string words(const asio::error_code& ec) {
  return ec.category() == tether_category() ? describe(static_cast<errc>(ec.value()))
                                            : ec.message();
}

std::string target_text(const mux::target& t) {
  const auto host = t.device.find(':') != std::string::npos ? "[" + t.device + "]" : t.device;
  return host + ":" + std::to_string(t.port);
}

}  // namespace

stdio_client::stdio_client(dialer dial, mux::target target, std::string server)
    : dial_(std::move(dial)),
      target_(std::move(target)),
      server_(std::move(server)),
      target_text_(target_text(target_)) {}

void stdio_client::stop() {
  if (stopping_) return;
  stopping_ = true;
  spdlog::info("stopping: ending the stream to {}", target_text_);
  if (tunnel_) tunnel_->close();  // the channel fails with session_lost, ending the bridge
  // A bridge blocked on a reader that does not read, or a writer that does not write,
  // notices the channel only between operations: wake it.
  if (in_) stop_waiting(*in_);
  if (out_) stop_waiting(*out_);
}

asio::awaitable<stdio_outcome> stdio_client::run(asio::posix::stream_descriptor& in,
                                                 asio::posix::stream_descriptor& out) {
  stdio_outcome result;
  auto dialed = co_await dial_();
  if (!dialed.tunnel) {
    result.at = stage::dial;
    result.kind =
        dialed.kind == dial_outcome::failure::none ? dial_outcome::failure::transient : dialed.kind;
    result.error = std::move(dialed.error);
    co_return result;
  }
  tunnel_ = std::move(dialed.tunnel);
  struct close_on_exit {
    std::shared_ptr<mux::tunnel>& t;
    ~close_on_exit() {
      if (t) t->close();
      t.reset();
    }
  } closer{tunnel_};
  if (stopping_) co_return result;
  spdlog::info("connected to {}", server_);

  auto target = target_;  // named: a braced temporary with a string inside co_await miscompiles
  auto [oec, ch] = co_await tunnel_->open(std::move(target));
  if (stopping_) co_return result;
  if (oec) {
    result.at = stage::open;
    result.kind = dial_outcome::failure::fatal;
    result.error =
        "cannot open a stream to " + target_text_ + " through " + server_ + ": " + words(oec);
    if (const auto detail = tunnel_->last_open_error(); !detail.empty() && detail != words(oec))
      result.error += " (" + detail + ")";
    co_return result;
  }
  spdlog::info("stream to {} open; relaying stdin and stdout", target_text_);

  in_ = &in;
  out_ = &out;
  const auto r = co_await (bridge_then_close(in, out, *ch) && watch_session(in, out, *ch));
  in_ = out_ = nullptr;
  ch.reset();
  spdlog::info("stream to {} ended: {} bytes sent, {} received{}{}", target_text_, r.to_channel,
               r.from_channel, r.error ? ", " : "", r.error ? words(r.error) : "");
  if (!r.error || stopping_) {
    result.bytes = r;
    co_return result;
  }
  // Why the session ended, when that is what cut the stream: the transport's own code
  // ("end of file", a keepalive timeout) or, for SSH, its words.
  std::string why_session;
  if (r.failed == stdio_bridge_result::side::channel &&
      r.error == make_error_code(errc::session_lost)) {
    const auto why = co_await tunnel_->wait_closed();  // it has ended: completes at once
    why_session = why && why != r.error ? words(why) : tunnel_->last_open_error();
  }
  auto failed = stream_failed(r, why_session);
  co_return failed;
}

asio::awaitable<stdio_bridge_result> stdio_client::bridge_then_close(
    asio::posix::stream_descriptor& in, asio::posix::stream_descriptor& out, mux::channel& ch) {
  auto r = co_await bridge_stdio(in, out, ch, pool_);
  bridged_ = true;
  tunnel_->close();  // the stream was the session's only job; this also ends watch_session()
  co_return r;
}

// The bridge learns of a failed channel when it next uses it, and after the device's FIN it
// may wait on a silent stdin for ever: the session's end must stop that wait.
asio::awaitable<void> stdio_client::watch_session(asio::posix::stream_descriptor& in,
                                                  asio::posix::stream_descriptor& out,
                                                  mux::channel& ch) {
  auto t = tunnel_;
  co_await t->wait_closed();
  if (bridged_) co_return;
  if (ch.error()) {  // ended under the stream (not a GOAWAY, which lets open streams finish)
    stop_waiting(in);
    stop_waiting(out);
  }
}

stdio_outcome stdio_client::stream_failed(const stdio_bridge_result& r,
                                          const std::string& why_session) {
  stdio_outcome out;
  out.at = stage::stream;
  out.kind = dial_outcome::failure::fatal;
  out.bytes = r;
  const auto counts = " after " + std::to_string(r.to_channel) + " bytes sent and " +
                      std::to_string(r.from_channel) + " received";
  using side = stdio_bridge_result::side;
  switch (r.failed) {
    case side::input:
      out.error = "reading stdin: " + r.error.message() + "; the stream to " + target_text_ +
                  " was reset" + counts;
      break;
    case side::output:
      out.error = "writing stdout: " + r.error.message() + "; the stream to " + target_text_ +
                  " was reset" + counts;
      break;
    case side::channel:
    case side::none:
      if (r.error == make_error_code(errc::session_lost)) {
        out.error = "the tunnel session to " + server_ + " ended";
        if (!why_session.empty()) out.error += " (" + why_session + ")";
        out.error += "; the stream to " + target_text_ + " was cut" + counts;
      } else {
        out.error = "the stream to " + target_text_ + " failed: " + words(r.error) + counts;
      }
      break;
  }
  return out;
}

}  // namespace tether::client
