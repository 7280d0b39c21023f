#include "stdio_mode.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/signal_set.hpp>
#include <csignal>
#include <iostream>
#include <memory>
#include <system_error>

#include "client_setup.hpp"
#include "commands.hpp"
#include "tether/client/stdio_client.hpp"

namespace tether::cli {
namespace {

using asio::posix::stream_descriptor;
using client::dial_outcome;
using client::stdio_outcome;

// Takes `fd` (0 or 1) over for the relay: returns a private duplicate of it and leaves
// /dev/null in its place. A stray write to stdout then cannot land in the middle of the
// stream, and closing the duplicate really ends the stream for its reader (no other
// descriptor of ours holds it open). A closed `fd` counts as /dev/null.
int take_over(int fd) {
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) throw std::system_error(errno, std::generic_category(), "open /dev/null");
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (own < 0) own = ::fcntl(null, F_DUPFD_CLOEXEC, 3);
  const bool replaced = ::dup2(null, fd) == fd;
  const int saved_errno = errno;
  ::close(null);
  if (own < 0 || !replaced) {
    if (own >= 0) ::close(own);
    throw std::system_error(saved_errno, std::generic_category(),
                            "taking over descriptor " + std::to_string(fd));
  }
  return own;
}

// The one line on stderr, and the exit code. A failed dial is worded as connect words it.
int report(const stdio_outcome& o, const client::server_url& url, const credential_origin& from) {
  using stage = stdio_outcome::stage;
  if (o.at == stage::done) return exit_ok;
  if (o.at == stage::dial) {
    client::dial_outcome failed;
    failed.error = o.error;
    failed.kind = o.kind;
    return report_dial_failure(failed, url, false, from);
  }
  std::cerr << "error: " << o.error << std::endl;
  return exit_failure;
}

// What the relay's coroutine and the signal handler share. Held by both, so that a loop
// stopped by force (the second signal) leaves nothing they refer to destroyed before them.
struct stdio_run {
  stdio_run(asio::io_context& io, client::dialer dial, mux::target target, std::string server,
            int in_fd, int out_fd)
      : in(io, in_fd), out(io, out_fd), client(std::move(dial), std::move(target), server) {}
  stream_descriptor in;
  stream_descriptor out;
  client::stdio_client client;
  stdio_outcome outcome;
  bool finished = false;
  bool crashed = false;
};

}  // namespace

int run_stdio(asio::io_context& io, client::dialer dial, const client::server_url& url,
              mux::target target, const credential_origin& from) {
  const auto server = server_label(url);
  std::shared_ptr<stdio_run> run;
  try {
    const int in_fd = take_over(STDIN_FILENO);
    int out_fd = -1;
    try {
      out_fd = take_over(STDOUT_FILENO);
    } catch (...) {
      ::close(in_fd);
      throw;
    }
    run =
        std::make_shared<stdio_run>(io, std::move(dial), std::move(target), server, in_fd, out_fd);
  } catch (const std::exception& e) {
    std::cerr << "error: --stdio: " << e.what() << std::endl;
    return exit_failure;
  }

  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  signals.async_wait([run, &signals, &io](const asio::error_code& ec, int sig) {
    // A signal can be queued just before the stream ends and cancel() runs (ssh sends its
    // ProxyCommand SIGHUP as it leaves): waiting again then would keep the loop alive for good.
    if (ec || run->finished || run->crashed) return;
    spdlog::info("signal {}: ending the stream", sig);
    run->client.stop();
    signals.async_wait([&io](const asio::error_code& ec2, int) {
      if (!ec2) io.stop();
    });
  });

  asio::co_spawn(
      io,
      [run, &signals]() -> asio::awaitable<void> {
        run->outcome = co_await run->client.run(run->in, run->out);
        run->finished = true;
        signals.cancel();
      },
      [run, &signals](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          std::cerr << "error: " << x.what() << std::endl;
        }
        run->crashed = true;
        signals.cancel();
      });
  io.run();
  if (run->crashed) return exit_failure;
  if (!run->finished) return exit_ok;  // stopped by a second signal
  return report(run->outcome, url, from);
}

}  // namespace tether::cli
