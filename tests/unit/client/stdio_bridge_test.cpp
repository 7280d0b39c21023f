// stdin and stdout relayed to one stream (`connect --stdio`): real pipes and regular files
// as the local side, a real session pair whose server side plays the device. Bytes arrive
// exact both ways; EOF travels as half-close in either order; a reset, a lost session or a
// reader that went away end both directions, even while stdin stays silent; the
// descriptors' file status flags are put back; stdio_client words its failures.

#include "tether/client/stdio_bridge.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <csignal>
#include <cstdio>
#include <random>

#include "../mux/session_fixture.hpp"
#include "dial_outcome_of.hpp"
#include "tether/client/stdio_client.hpp"
#include "tether/mux/use_tuple.hpp"

namespace tether::client {
namespace {

using testing::give;

using asio::posix::stream_descriptor;
using mux::testing::as_bytes;
using namespace std::chrono_literals;

std::string random_text(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A pipe's two ends: the bridge gets one, the test drives the other.
struct fd_pair {
  int read = -1, write = -1;
};
fd_pair make_pipe() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  return {fds[0], fds[1]};
}

bool non_blocking(int fd) {
  return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
}

// What the device (the server side of the session) saw of its stream.
struct device_record {
  mux::target target;
  std::string received;
  bool got_fin = false;
  asio::error_code ended;  // the error that ended its reading, if any
};

enum class device_mode {
  echo,          // echoes every byte and the FIN
  greet_first,   // sends a greeting and its FIN at once, then reads to the end
  reply_at_end,  // reads to the FIN, then answers with the byte count and a FIN
  reset_early,   // resets the stream (refused) after the first bytes
  hold,          // accepts and neither reads nor writes
  chatter,       // sends 4 MiB, then reads to the end
};

constexpr std::string_view greeting = "hello from the device\n";
constexpr std::size_t chatter_size = 4 << 20;

asio::awaitable<void> read_to_end(mux::channel& ch, device_record& rec) {
  for (;;) {
    auto [ec, bytes] = co_await ch.receive();
    if (ec) {
      rec.ended = ec;
      co_return;
    }
    if (bytes.empty()) {
      rec.got_fin = true;
      co_return;
    }
    rec.received.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    ch.consumed(bytes.size());
  }
}

asio::awaitable<void> play_device(std::unique_ptr<mux::channel> ch,
                                  std::shared_ptr<device_record> rec, device_mode mode,
                                  asio::any_io_executor ex) {
  switch (mode) {
    case device_mode::echo:
      break;  // served by the fixture's echo
    case device_mode::greet_first:
      co_await mux::testing::send_all(*ch, as_bytes(greeting));
      co_await ch->send_eof();
      co_await read_to_end(*ch, *rec);
      break;
    case device_mode::reply_at_end: {
      co_await read_to_end(*ch, *rec);
      const auto reply = std::to_string(rec->received.size()) + " bytes\n";
      co_await mux::testing::send_all(*ch, as_bytes(reply));
      co_await ch->send_eof();
      break;
    }
    case device_mode::reset_early: {
      auto [ec, bytes] = co_await ch->receive();
      if (!ec) rec->received.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      ch->reset(errc::refused);
      break;
    }
    case device_mode::hold: {
      asio::steady_timer t(ex, 60s);
      co_await t.async_wait(use_tuple);
      break;
    }
    case device_mode::chatter: {
      const auto data = random_text(chatter_size, 7);
      try {
        co_await mux::testing::send_all(*ch, as_bytes(data));
      } catch (const std::system_error& e) {
        rec->ended = e.code();
        co_return;
      }
      co_await read_to_end(*ch, *rec);
      break;
    }
  }
}

class StdioBridge : public mux::testing::session_fixture {
 protected:
  static void SetUpTestSuite() { std::signal(SIGPIPE, SIG_IGN); }

  void connect_device(device_mode mode) {
    auto pair = connect_pair({}, [this, mode](mux::incoming_stream incoming) {
      device->target = incoming.target();
      if (mode == device_mode::echo) return mux::testing::echo(std::move(incoming), ex());
      asio::co_spawn(ex(), play_device(incoming.accept(), device, mode, ex()), asio::detached);
    });
    client_session = pair.client;
    server_session = pair.server;
  }

  // Opens the stream and starts the bridge on descriptors `in_fd` and `out_fd`.
  void start_bridge(device_mode mode, int in_fd, int out_fd) {
    connect_device(mode);
    auto opened = start(client_session->open(mux::target{"dev-42", 22, mux::protocol::tcp}));
    ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
    ASSERT_FALSE((*opened)->first) << (*opened)->first.message();
    channel = std::move((*opened)->second);
    bridge_in = std::make_unique<stream_descriptor>(io, in_fd);
    bridge_out = std::make_unique<stream_descriptor>(io, out_fd);
    result = start(bridge_stdio(*bridge_in, *bridge_out, *channel, pool));
  }

  // Pipes on both sides: the test writes `to_stdin` and reads `from_stdout`.
  void start_with_pipes(device_mode mode) {
    const auto a = make_pipe();
    const auto b = make_pipe();
    to_stdin = std::make_unique<stream_descriptor>(io, a.write);
    from_stdout = std::make_unique<stream_descriptor>(io, b.read);
    start_bridge(mode, a.read, b.write);
  }

  // Writes `data` to the bridge's stdin, then closes it when `close` says so.
  std::shared_ptr<bool> feed(std::string data, bool close) {
    return start(
        [](stream_descriptor& d, std::string bytes, bool then_close) -> asio::awaitable<void> {
          auto [ec, n] = co_await asio::async_write(d, asio::buffer(bytes), use_tuple);
          EXPECT_FALSE(ec) << ec.message();
          if (then_close) d.close();
        }(*to_stdin, std::move(data), close));
  }

  // Reads the bridge's stdout to EOF (or to `limit` bytes) into `stdout_text`.
  std::shared_ptr<bool> drain(std::size_t limit = SIZE_MAX) {
    return start(
        [](stream_descriptor& d, std::string& text, std::size_t most) -> asio::awaitable<void> {
          std::array<char, 65536> buf;
          while (text.size() < most) {
            auto [ec, n] = co_await d.async_read_some(asio::buffer(buf), use_tuple);
            if (ec) co_return;  // eof
            text.append(buf.data(), n);
          }
        }(*from_stdout, stdout_text, limit));
  }

  bool bridge_done(std::chrono::milliseconds limit = 10s) {
    return run_until([&] { return result && result->has_value(); }, limit);
  }
  const stdio_bridge_result& bridged() { return result->value(); }

  void TearDown() override {
    channel.reset();
    bridge_in.reset();
    bridge_out.reset();
    to_stdin.reset();
    from_stdout.reset();
    session_fixture::TearDown();
  }

  relay::buffer_pool pool{64 * 1024, 2};
  std::shared_ptr<mux::session> client_session, server_session;
  std::shared_ptr<device_record> device = std::make_shared<device_record>();
  std::unique_ptr<mux::channel> channel;
  std::unique_ptr<stream_descriptor> bridge_in, bridge_out, to_stdin, from_stdout;
  std::shared_ptr<std::optional<stdio_bridge_result>> result;
  std::string stdout_text;
};

TEST_F(StdioBridge, FourMiBEchoedByteExactAndBothEndsClean) {
  start_with_pipes(device_mode::echo);
  const auto data = random_text(4 << 20, 1);
  auto fed = feed(data, true);
  auto drained = drain();
  ASSERT_TRUE(bridge_done(30s));
  ASSERT_TRUE(run_until([&] { return *fed && *drained; }));
  EXPECT_FALSE(bridged().error) << bridged().error.message();
  EXPECT_EQ(bridged().failed, stdio_bridge_result::side::none);
  EXPECT_EQ(bridged().to_channel, data.size());
  EXPECT_EQ(bridged().from_channel, data.size());
  EXPECT_TRUE(stdout_text == data) << "stdout differs from what went in";
  EXPECT_EQ(device->target.device, "dev-42");
  EXPECT_FALSE(bridge_out->is_open()) << "stdout is closed once the device's side ended";
}

// The device ends its side first: stdout reaches EOF while stdin is still open, and what
// stdin sends afterwards still reaches the device.
TEST_F(StdioBridge, DeviceHalfClosesFirstStdoutEndsAndStdinStillFlows) {
  start_with_pipes(device_mode::greet_first);
  auto drained = drain();
  ASSERT_TRUE(run_until([&] { return *drained; })) << "no EOF on stdout";
  EXPECT_EQ(stdout_text, greeting);
  EXPECT_FALSE(result->has_value()) << "the bridge ended while stdin was open";

  auto fed = feed("late words, after the device finished talking\n", true);
  ASSERT_TRUE(bridge_done());
  EXPECT_FALSE(bridged().error) << bridged().error.message();
  EXPECT_TRUE(run_until([&] { return device->got_fin; }));
  EXPECT_EQ(device->received, "late words, after the device finished talking\n");
}

// stdin ends first: the device gets a FIN after every byte, and its answer still arrives.
TEST_F(StdioBridge, StdinEofIsAHalfCloseAndTheAnswerStillArrives) {
  start_with_pipes(device_mode::reply_at_end);
  const auto data = random_text(300000, 2);
  auto fed = feed(data, true);
  auto drained = drain();
  ASSERT_TRUE(bridge_done());
  ASSERT_TRUE(run_until([&] { return *drained; }));
  EXPECT_FALSE(bridged().error) << bridged().error.message();
  EXPECT_TRUE(device->got_fin);
  EXPECT_TRUE(device->received == data);
  EXPECT_EQ(stdout_text, "300000 bytes\n");
}

// A reset ends the bridge although stdin never ends: the read of stdin is abandoned.
TEST_F(StdioBridge, DeviceResetEndsBothWaysWhileStdinStaysOpen) {
  start_with_pipes(device_mode::reset_early);
  auto fed = feed("first bytes", false);
  ASSERT_TRUE(bridge_done());
  EXPECT_EQ(bridged().failed, stdio_bridge_result::side::channel);
  EXPECT_EQ(bridged().error, make_error_code(errc::refused));
  EXPECT_EQ(device->received, "first bytes");
}

TEST_F(StdioBridge, SessionLostWhileIdleEndsTheBridge) {
  start_with_pipes(device_mode::hold);
  ASSERT_TRUE(settle());
  EXPECT_FALSE(result->has_value());
  server_session->close();
  ASSERT_TRUE(bridge_done());
  EXPECT_EQ(bridged().failed, stdio_bridge_result::side::channel);
  EXPECT_EQ(bridged().error, make_error_code(errc::session_lost));
}

// The program reading stdout went away: the write fails, and the device sees its stream
// reset rather than an orderly end.
TEST_F(StdioBridge, ReaderGoneResetsTheStream) {
  start_with_pipes(device_mode::chatter);
  from_stdout->close();
  ASSERT_TRUE(bridge_done());
  EXPECT_EQ(bridged().failed, stdio_bridge_result::side::output);
  EXPECT_EQ(bridged().error, asio::error::broken_pipe);
  EXPECT_TRUE(run_until([&] { return static_cast<bool>(device->ended); }))
      << "the device's stream did not fail";
  EXPECT_FALSE(device->got_fin);
}

// Regular files cannot be watched by epoll, and need not be: `--stdio < in > out`.
TEST_F(StdioBridge, RegularFilesAsStdinAndStdout) {
  const auto data = random_text(1 << 20, 3);
  char in_name[] = "/tmp/tether-stdio-in-XXXXXX";
  char out_name[] = "/tmp/tether-stdio-out-XXXXXX";
  const int in_fd = ::mkstemp(in_name);
  const int out_fd = ::mkstemp(out_name);
  ASSERT_GE(in_fd, 0);
  ASSERT_GE(out_fd, 0);
  ::unlink(in_name);
  ::unlink(out_name);
  ASSERT_EQ(::write(in_fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::lseek(in_fd, 0, SEEK_SET), 0);
  const int check_fd = ::dup(out_fd);  // to read the output back after the bridge closed it

  start_bridge(device_mode::echo, in_fd, out_fd);
  ASSERT_TRUE(bridge_done(30s));
  EXPECT_FALSE(bridged().error) << bridged().error.message();
  EXPECT_EQ(bridged().to_channel, data.size());
  EXPECT_EQ(bridged().from_channel, data.size());

  std::string written(data.size() + 1, '\0');
  EXPECT_EQ(::pread(check_fd, written.data(), written.size(), 0),
            static_cast<ssize_t>(data.size()));
  written.resize(data.size());
  EXPECT_TRUE(written == data) << "the output file differs from the input file";
  ::close(check_fd);
}

// Asio makes the descriptors non-blocking; the open files are shared (a terminal with the
// shell), so their flags go back as they were.
TEST_F(StdioBridge, FileStatusFlagsArePutBack) {
  const auto a = make_pipe();
  const auto b = make_pipe();
  const int in_watch = ::dup(a.read);  // same open files as the bridge's descriptors
  const int out_watch = ::dup(b.write);
  ASSERT_FALSE(non_blocking(in_watch));
  to_stdin = std::make_unique<stream_descriptor>(io, a.write);
  from_stdout = std::make_unique<stream_descriptor>(io, b.read);
  start_bridge(device_mode::echo, a.read, b.write);
  auto fed = feed("some bytes", false);
  auto drained = drain(10);
  ASSERT_TRUE(run_until([&] { return *drained; }));
  EXPECT_TRUE(non_blocking(in_watch)) << "expected Asio to switch the pipe to non-blocking";
  to_stdin->close();
  ASSERT_TRUE(bridge_done());
  EXPECT_FALSE(bridged().error) << bridged().error.message();
  EXPECT_FALSE(non_blocking(in_watch));
  EXPECT_FALSE(non_blocking(out_watch));
  ::close(in_watch);
  ::close(out_watch);
}

// ---- stdio_client: dial once, open, relay, and failures in words -------------------------

asio::awaitable<dial_outcome> fail_with(dial_outcome::failure kind, std::string error) {
  dial_outcome o;
  o.kind = kind;
  o.error = std::move(error);
  co_return o;
}

class StdioClient : public StdioBridge {
 protected:
  // A client over a session pair whose server refuses every stream with `refusal`, or
  // plays `mode`; pipes on both sides.
  void start_client(device_mode mode, errc refusal = errc::ok) {
    auto pair = connect_pair({}, [this, mode, refusal](mux::incoming_stream incoming) {
      device->target = incoming.target();
      if (refusal != errc::ok) return incoming.refuse(refusal, "no device 'dev-9' here");
      if (mode == device_mode::echo) return mux::testing::echo(std::move(incoming), ex());
      asio::co_spawn(ex(), play_device(incoming.accept(), device, mode, ex()), asio::detached);
    });
    client_session = pair.client;
    server_session = pair.server;
    std::shared_ptr<mux::tunnel> t = client_session;
    client = std::make_unique<stdio_client>(
        [t] { return give(t); }, mux::target{"dev-9", 22, mux::protocol::tcp}, "test-server:7443");
    const auto a = make_pipe();
    const auto b = make_pipe();
    to_stdin = std::make_unique<stream_descriptor>(io, a.write);
    from_stdout = std::make_unique<stream_descriptor>(io, b.read);
    bridge_in = std::make_unique<stream_descriptor>(io, a.read);
    bridge_out = std::make_unique<stream_descriptor>(io, b.write);
    outcome = start(client->run(*bridge_in, *bridge_out));
  }

  bool client_done(std::chrono::milliseconds limit = 10s) {
    return run_until([&] { return outcome && outcome->has_value(); }, limit);
  }

  void TearDown() override {
    if (outcome && !outcome->has_value() && client) {
      client->stop();
      EXPECT_TRUE(client_done());
    }
    StdioBridge::TearDown();
    client.reset();
  }

  std::unique_ptr<stdio_client> client;
  std::shared_ptr<std::optional<stdio_outcome>> outcome;
};

TEST_F(StdioClient, RelaysAndEndsDone) {
  start_client(device_mode::reply_at_end);
  auto fed = feed("twelve bytes", true);
  auto drained = drain();
  ASSERT_TRUE(client_done());
  ASSERT_TRUE(run_until([&] { return *drained; }));
  const auto& o = outcome->value();
  EXPECT_EQ(o.at, stdio_outcome::stage::done) << o.error;
  EXPECT_EQ(o.kind, dial_outcome::failure::none);
  EXPECT_EQ(stdout_text, "12 bytes\n");
  EXPECT_EQ(o.bytes.to_channel, 12u);
  EXPECT_TRUE(client_session->closed()) << "the session is closed once the stream ended";
}

TEST_F(StdioClient, RefusedStreamNamesTargetServerAndTheServersWords) {
  start_client(device_mode::echo, errc::unknown_device);
  ASSERT_TRUE(client_done());
  const auto& o = outcome->value();
  EXPECT_EQ(o.at, stdio_outcome::stage::open);
  EXPECT_EQ(o.kind, dial_outcome::failure::fatal);
  EXPECT_EQ(o.error,
            "cannot open a stream to dev-9:22 through test-server:7443: unknown device (no "
            "device 'dev-9' here)");
  EXPECT_EQ(device->target.device, "dev-9");
}

TEST_F(StdioClient, SessionLostMidStreamSaysSoWithTheCounts) {
  start_client(device_mode::greet_first);
  auto drained = drain();
  ASSERT_TRUE(run_until([&] { return *drained; }));
  server_session->close();
  ASSERT_TRUE(client_done());
  const auto& o = outcome->value();
  EXPECT_EQ(o.at, stdio_outcome::stage::stream);
  EXPECT_EQ(o.kind, dial_outcome::failure::fatal);
  EXPECT_NE(o.error.find("the tunnel session to test-server:7443 ended"), std::string::npos)
      << o.error;
  EXPECT_NE(o.error.find("the stream to dev-9:22 was cut after 0 bytes sent and " +
                         std::to_string(greeting.size()) + " received"),
            std::string::npos)
      << o.error;
}

TEST_F(StdioClient, StopEndsAQuietStreamAsDone) {
  start_client(device_mode::hold);
  ASSERT_TRUE(settle());
  ASSERT_FALSE(outcome->has_value());
  client->stop();
  ASSERT_TRUE(client_done());
  EXPECT_EQ(outcome->value().at, stdio_outcome::stage::done) << outcome->value().error;
  EXPECT_TRUE(client_session->closed());
}

TEST_F(StdioClient, DialFailuresKeepTheirKindAndWords) {
  stream_descriptor a(io, ::open("/dev/null", O_RDONLY | O_CLOEXEC));
  stream_descriptor b(io, ::open("/dev/null", O_WRONLY | O_CLOEXEC));
  stdio_client c(
      [] {
        return fail_with(dial_outcome::failure::bad_credentials,
                         "authentication failed: token rejected");
      },
      mux::target{"dev-9", 22, mux::protocol::tcp}, "test-server:7443");
  auto o = start(c.run(a, b));
  ASSERT_TRUE(run_until([&] { return o->has_value(); }));
  EXPECT_EQ(o->value().at, stdio_outcome::stage::dial);
  EXPECT_EQ(o->value().kind, dial_outcome::failure::bad_credentials);
  EXPECT_EQ(o->value().error, "authentication failed: token rejected");
}

}  // namespace
}  // namespace tether::client
