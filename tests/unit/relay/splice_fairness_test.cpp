// One event loop carries every stream of a session, so a bulk upload must not keep it to
// itself. Over real loopback sockets and a real session pair: a local socket that always
// has bytes waiting is spliced to one stream, an interactive socket to another; the
// interactive byte must reach the far end after a few chunks of the bulk, not after its
// whole window. (Before splice() yielded between chunks, every read and send of the bulk
// completed at once and the interactive stream waited for all 2 MiB of it.)

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/ip/tcp.hpp>
#include <cerrno>

#include "../mux/session_fixture.hpp"
#include "tether/relay/splice.hpp"

namespace tether::relay {
namespace {

using asio::ip::tcp;

constexpr std::uint16_t bulk_port = 1;
constexpr std::uint16_t interactive_port = 2;
constexpr std::size_t stream_window = 2u << 20;

// A connected pair of loopback sockets: `local` goes to splice(), the test owns `far`.
struct socket_pair {
  explicit socket_pair(asio::io_context& io) : local(io), far(io) {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    // Room for more than one stream window of bytes waiting, before anything reads them.
    acceptor.set_option(asio::socket_base::receive_buffer_size(4 << 20));
    far.open(tcp::v4());
    far.set_option(asio::socket_base::send_buffer_size(4 << 20));
    far.connect(acceptor.local_endpoint());
    acceptor.accept(local);
  }
  tcp::socket local, far;
};

// Writes up to `limit` bytes into `s` without waiting; returns how many the kernel took.
std::size_t fill(tcp::socket& s, std::size_t limit) {
  std::vector<char> chunk(64 * 1024, 'b');
  std::size_t total = 0;
  while (total < limit) {
    const auto n = ::send(s.native_handle(), chunk.data(), std::min(chunk.size(), limit - total),
                          MSG_DONTWAIT);
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
  }
  return total;
}

class SpliceFairnessTest : public mux::testing::session_fixture {};

TEST_F(SpliceFairnessTest, AnInteractiveByteOvertakesMostOfABulkWindow) {
  // The far end: counts bulk bytes as they arrive; when the first have come, the
  // interactive side sends its byte; when that arrives, notes how much bulk came before it.
  std::size_t bulk_received = 0;
  std::optional<std::size_t> bulk_before_interactive;
  std::function<void()> on_first_bulk;
  auto on_open = [&](mux::incoming_stream in) {
    const auto port = in.target().port;
    asio::co_spawn(
        ex(),
        [&, port, ch = in.accept()]() -> asio::awaitable<void> {
          for (;;) {
            auto [ec, bytes] = co_await ch->receive();
            if (ec || bytes.empty()) co_return;
            const auto n = bytes.size();
            ch->consumed(n);
            if (port == interactive_port) {
              bulk_before_interactive = bulk_received;
              continue;
            }
            const bool first = bulk_received == 0;
            bulk_received += n;
            if (first && on_first_bulk) on_first_bulk();
          }
        },
        asio::detached);
  };
  mux::session_settings settings;
  settings.stream_window = stream_window;
  auto pair = connect_pair(settings, on_open);

  auto bulk_open = start(pair.client->open(mux::target{"dev", bulk_port, mux::protocol::tcp}));
  auto interactive_open =
      start(pair.client->open(mux::target{"dev", interactive_port, mux::protocol::tcp}));
  ASSERT_TRUE(run_until([&] { return bulk_open->has_value() && interactive_open->has_value(); }));
  auto bulk_ch = std::move(bulk_open->value().second);
  auto interactive_ch = std::move(interactive_open->value().second);
  ASSERT_TRUE(bulk_ch && interactive_ch);

  socket_pair bulk(io), interactive(io);
  // More than a window waits in the socket: every read of the bulk splice finds 256 KiB,
  // and only credit could stop it.
  const auto queued = fill(bulk.far, stream_window + stream_window / 2);
  ASSERT_GE(queued, stream_window) << "the kernel did not buffer a window of bytes";
  on_first_bulk = [&] {
    const char ping = 'p';
    ASSERT_EQ(::send(interactive.far.native_handle(), &ping, 1, MSG_DONTWAIT), 1);
  };

  buffer_pool pool;
  auto bulk_done = start(splice(bulk.local, *bulk_ch, pool));
  auto interactive_done = start(splice(interactive.local, *interactive_ch, pool));
  ASSERT_TRUE(run_until([&] { return bulk_before_interactive.has_value(); }))
      << "the interactive byte never arrived; bulk bytes received: " << bulk_received;
  // A few 256 KiB chunks may go first (the one in hand, those already queued), not the
  // window's eight.
  EXPECT_LE(*bulk_before_interactive, stream_window / 2)
      << "the interactive byte waited for most of the bulk window";

  // Both ends hang up; the splices end.
  bulk.far.close();
  interactive.far.close();
  EXPECT_TRUE(run_until([&] { return bulk_done->has_value() && interactive_done->has_value(); }));
}

}  // namespace
}  // namespace tether::relay
