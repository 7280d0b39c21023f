#pragma once
// `tether connect URL --stdio TARGET`: one tunnel session, one stream to TARGET, relayed to
// the process's stdin and stdout (stdio_bridge.hpp) until it ends. Made for OpenSSH's
// ProxyCommand, where ssh itself reconnects if it wants to: nothing here retries.
//
// Threading: one single-threaded executor (the dialer's); all calls from it.

#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <memory>
#include <string>

#include "tether/client/dialer.hpp"
#include "tether/client/stdio_bridge.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/relay/buffer_pool.hpp"

namespace tether::client {

struct stdio_outcome {
  enum class stage {
    done,    // the stream ended cleanly both ways, or stop() ended it
    dial,    // no session: `kind` and `error` are the dialer's (dial_outcome)
    open,    // the server (or SSH server) refused the stream, or no answer came
    stream,  // the stream failed after it opened: reset, session lost, a local I/O error
  } at = stage::done;
  dial_outcome::failure kind = dial_outcome::failure::none;  // none exactly when `done`
  std::string error;  // plain words; after `dial`, the dialer's words as they came
  stdio_bridge_result bytes;
};

class stdio_client {
 public:
  /// `server`: how the server is named in messages ("host:7443").
  stdio_client(dialer dial, mux::target target, std::string server);
  stdio_client(const stdio_client&) = delete;
  stdio_client& operator=(const stdio_client&) = delete;

  /// Dials once, opens the stream, relays `in` and `out` to it until both directions have
  /// ended (see bridge_stdio), then closes the session. A failure at any step ends it with
  /// words fit for stderr; `kind` tells a bad credential or an untrusted server from the
  /// rest. Does not throw for failures of the network or of the local descriptors.
  asio::awaitable<stdio_outcome> run(asio::posix::stream_descriptor& in,
                                     asio::posix::stream_descriptor& out);

  /// Ends the stream and the session now (a signal): run() completes with stage `done`.
  /// A dial or an open in progress is not interrupted (each has its own deadline); run()
  /// stops as soon as it completes. Idempotent.
  void stop();

 private:
  asio::awaitable<stdio_bridge_result> bridge_then_close(asio::posix::stream_descriptor& in,
                                                         asio::posix::stream_descriptor& out,
                                                         mux::channel& ch);
  asio::awaitable<void> watch_session(asio::posix::stream_descriptor& in,
                                      asio::posix::stream_descriptor& out, mux::channel& ch);
  stdio_outcome stream_failed(const stdio_bridge_result& r, const std::string& why_session);

  dialer dial_;
  mux::target target_;
  std::string server_;
  std::string target_text_;  // "dev-42:22", "[::1]:22"
  relay::buffer_pool pool_{256 * 1024, 2};
  std::shared_ptr<mux::tunnel> tunnel_;
  asio::posix::stream_descriptor* in_ = nullptr;  // while the bridge runs
  asio::posix::stream_descriptor* out_ = nullptr;
  bool stopping_ = false;
  bool bridged_ = false;  // the bridge has ended; the session is closing because of it
};

}  // namespace tether::client
