// The table of moved streams: a device connection parked under a token until a session of
// the same credential claims it, and closed abortively when nobody does in time or when it
// cannot be kept.

#include "tether/server/moved_streams.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <thread>
#include <vector>

namespace tether::server {
namespace moved_streams_cases {
namespace {

using asio::ip::tcp;
using namespace std::chrono_literals;

wire::move_token parking_token(std::uint8_t seed) {
  wire::move_token t{};
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::byte>(seed + 13 * i);
  return t;
}

// A loopback connection: `near` is what gets parked, `far` its peer (the device).
struct loopback {
  tcp::socket near, far;
};

loopback connect_loopback(asio::io_context& io) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  loopback out{tcp::socket(io), tcp::socket(io)};
  out.far.connect(acceptor.local_endpoint());
  acceptor.accept(out.near);
  return out;
}

parked_stream park_of(tcp::socket& sock, std::string credential) {
  parked_stream p;
  p.connection = relay::detached_socket::take(sock);
  p.credential = std::move(credential);
  p.target = mux::target{"dev-1", 22, mux::protocol::tcp, {}};
  p.bytes_to_device = 1234;
  p.bytes_from_device = 5678;
  return p;
}

// How the connection of `far` ended, waiting at most 5 s for it to end: the errno of a
// failed read (ECONNRESET for a reset), 0 for an orderly EOF, -1 if it has not ended.
int how_it_ended(tcp::socket& far) {
  pollfd p{far.native_handle(), POLLIN, 0};
  if (::poll(&p, 1, 5000) <= 0) return -1;
  char byte = 0;
  const auto n = ::recv(far.native_handle(), &byte, 1, MSG_DONTWAIT);
  if (n == 0) return 0;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : errno;
  return -1;  // a byte: not an end
}

// True if `far` has neither data nor an end waiting right now.
bool still_quiet(tcp::socket& far) {
  pollfd p{far.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

TEST(MovedStreams, TheSameCredentialClaimsAParkedStreamThatStillWorks) {
  asio::io_context io;
  auto conn = connect_loopback(io);
  moved_streams table;
  const auto token = parking_token(1);
  ASSERT_TRUE(table.park(token, park_of(conn.near, "alice")));
  EXPECT_FALSE(conn.near.is_open()) << "take() left the socket open";
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(still_quiet(conn.far)) << "parking disturbed the connection";

  auto claimed = table.claim(token, "alice");
  ASSERT_TRUE(claimed);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(claimed->credential, "alice");
  EXPECT_EQ(claimed->target.device, "dev-1");
  EXPECT_EQ(claimed->target.port, 22);
  EXPECT_EQ(claimed->bytes_to_device, 1234u);
  EXPECT_EQ(claimed->bytes_from_device, 5678u);
  ASSERT_TRUE(claimed->connection);

  // The connection goes on in a socket of another event loop, both ways.
  asio::io_context other;
  tcp::socket resumed(other);
  ASSERT_FALSE(claimed->connection.attach_to(resumed));
  EXPECT_FALSE(claimed->connection) << "attach_to() kept the descriptor too";
  ASSERT_TRUE(resumed.is_open());
  resumed.non_blocking(false);
  const std::string down = "to the device", up = "from the device";
  asio::write(resumed, asio::buffer(down));
  std::string got(down.size(), '\0');
  asio::read(conn.far, asio::buffer(got));
  EXPECT_EQ(got, down);
  asio::write(conn.far, asio::buffer(up));
  got.assign(up.size(), '\0');
  asio::read(resumed, asio::buffer(got));
  EXPECT_EQ(got, up);

  // Claimed once: a second claim finds nothing.
  EXPECT_FALSE(table.claim(token, "alice"));

  // An orderly end still passes through: nothing of the move is left on the connection.
  resumed.shutdown(tcp::socket::shutdown_send);
  EXPECT_EQ(how_it_ended(conn.far), 0);
}

TEST(MovedStreams, AnotherCredentialGetsNothingAndTheStreamStays) {
  asio::io_context io;
  auto conn = connect_loopback(io);
  moved_streams table;
  const auto token = parking_token(2);
  ASSERT_TRUE(table.park(token, park_of(conn.near, "alice")));

  EXPECT_FALSE(table.claim(token, "mallory"));
  EXPECT_FALSE(table.claim(token, ""));
  EXPECT_FALSE(table.claim(token, "alicE"));
  EXPECT_FALSE(table.claim(parking_token(3), "alice")) << "a token nobody parked";
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(still_quiet(conn.far)) << "a wrong claim closed the connection";

  auto claimed = table.claim(token, "alice");
  ASSERT_TRUE(claimed);
  EXPECT_TRUE(claimed->connection);
  EXPECT_EQ(table.size(), 0u);
}

TEST(MovedStreams, ATokenAlreadyParkedIsRefusedAndTheSecondConnectionReset) {
  asio::io_context io;
  auto first = connect_loopback(io);
  auto second = connect_loopback(io);
  moved_streams table;
  const auto token = parking_token(4);
  ASSERT_TRUE(table.park(token, park_of(first.near, "alice")));
  EXPECT_FALSE(table.park(token, park_of(second.near, "alice")));
  EXPECT_EQ(table.size(), 1u);
  EXPECT_EQ(how_it_ended(second.far), ECONNRESET) << "the refused connection was not reset";
  EXPECT_TRUE(still_quiet(first.far)) << "the refusal touched the stream parked first";

  auto claimed = table.claim(token, "alice");
  ASSERT_TRUE(claimed);
  tcp::socket resumed(io);
  ASSERT_FALSE(claimed->connection.attach_to(resumed));
  resumed.non_blocking(false);
  const std::string text = "first";
  asio::write(resumed, asio::buffer(text));
  std::string got(text.size(), '\0');
  asio::read(first.far, asio::buffer(got));
  EXPECT_EQ(got, text) << "the claim did not give the stream parked first";
}

TEST(MovedStreams, AFullTableRefusesAndResetsTheConnection) {
  asio::io_context io;
  std::vector<loopback> conns;
  for (int i = 0; i < 3; ++i) conns.push_back(connect_loopback(io));
  moved_streams table(2, 10s);
  ASSERT_TRUE(table.park(parking_token(10), park_of(conns[0].near, "alice")));
  ASSERT_TRUE(table.park(parking_token(11), park_of(conns[1].near, "bob")));
  EXPECT_FALSE(table.park(parking_token(12), park_of(conns[2].near, "alice")));
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(how_it_ended(conns[2].far), ECONNRESET);
  EXPECT_TRUE(still_quiet(conns[0].far));
  EXPECT_TRUE(still_quiet(conns[1].far));

  // A claim makes room again.
  ASSERT_TRUE(table.claim(parking_token(10), "alice"));
  auto again = connect_loopback(io);
  EXPECT_TRUE(table.park(parking_token(12), park_of(again.near, "alice")));
  EXPECT_EQ(table.size(), 2u);
}

TEST(MovedStreams, OneCredentialFillsOnlyItsShare) {
  asio::io_context io;
  std::vector<loopback> conns;
  for (int i = 0; i < 4; ++i) conns.push_back(connect_loopback(io));
  moved_streams table(16, 10s, 2);
  ASSERT_TRUE(table.park(parking_token(20), park_of(conns[0].near, "mallory")));
  ASSERT_TRUE(table.park(parking_token(21), park_of(conns[1].near, "mallory")));
  EXPECT_FALSE(table.park(parking_token(22), park_of(conns[2].near, "mallory")));
  EXPECT_EQ(how_it_ended(conns[2].far), ECONNRESET);
  // Another credential still moves its streams.
  EXPECT_TRUE(table.park(parking_token(23), park_of(conns[3].near, "alice")));
  EXPECT_EQ(table.size(), 3u);
}

TEST(MovedStreams, StreamsNobodyClaimsExpireWithAReset) {
  asio::io_context io;
  auto a = connect_loopback(io);
  auto b = connect_loopback(io);
  const auto ttl = 50ms;
  moved_streams table(16, ttl);
  ASSERT_TRUE(table.park(parking_token(20), park_of(a.near, "alice")));
  ASSERT_TRUE(table.park(parking_token(21), park_of(b.near, "alice")));
  const auto parked_at = std::chrono::steady_clock::now();
  EXPECT_EQ(table.expire(), 0u) << "expired before its time";
  EXPECT_EQ(table.size(), 2u);

  // Nothing to wait on but the clock: the ttl itself is what is tested.
  std::this_thread::sleep_until(parked_at + ttl + 20ms);
  EXPECT_EQ(table.expire(), 2u);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.expire(), 0u);
  EXPECT_EQ(how_it_ended(a.far), ECONNRESET) << "an expired stream ended without a reset";
  EXPECT_EQ(how_it_ended(b.far), ECONNRESET);
  EXPECT_FALSE(table.claim(parking_token(20), "alice"));
}

// A claim after the ttl finds nothing, even if expire() was never called.
TEST(MovedStreams, AClaimAfterTheTtlFindsNothing) {
  asio::io_context io;
  auto conn = connect_loopback(io);
  const auto ttl = 50ms;
  moved_streams table(16, ttl);
  ASSERT_TRUE(table.park(parking_token(30), park_of(conn.near, "alice")));
  std::this_thread::sleep_for(ttl + 20ms);
  EXPECT_FALSE(table.claim(parking_token(30), "alice"));
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(how_it_ended(conn.far), ECONNRESET);
}

// Workers park and claim at once (each call takes the lock): every stream parked is
// claimed exactly once.
TEST(MovedStreams, ParksAndClaimsFromSeveralThreadsAtOnce) {
  moved_streams table(4096, 10s, 4096);
  constexpr int threads = 4, per_thread = 200;
  std::vector<int> claimed(threads, 0);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&table, &claimed, t] {
      for (int i = 0; i < per_thread; ++i) {
        wire::move_token token{};
        token[0] = static_cast<std::byte>(t);
        token[1] = static_cast<std::byte>(i);
        token[2] = static_cast<std::byte>(i >> 8);
        parked_stream p;
        p.credential = "worker-" + std::to_string(t);
        if (!table.park(token, std::move(p))) continue;
        if (table.claim(token, "worker-" + std::to_string(t))) ++claimed[t];
      }
    });
  }
  for (auto& w : workers) w.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(claimed[t], per_thread) << "thread " << t;
  EXPECT_EQ(table.size(), 0u);
}

}  // namespace
}  // namespace moved_streams_cases
}  // namespace tether::server
