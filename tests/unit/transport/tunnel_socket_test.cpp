// The socket options that keep a session's frames from queueing behind bulk in the kernel
// (src/transport/tunnel_socket.hpp), on a real loopback connection.

#include "../../../src/transport/tunnel_socket.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <asio/io_context.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <thread>
#include <vector>

namespace tether::transport::detail {
namespace {

using asio::ip::tcp;

struct loopback_pair {
  explicit loopback_pair(asio::io_context& io) : a(io), b(io) {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    a.connect(acceptor.local_endpoint());
    acceptor.accept(b);
  }
  tcp::socket a, b;
};

int int_option(tcp::socket& s, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  EXPECT_EQ(::getsockopt(s.native_handle(), level, name, &v, &len), 0);
  return v;
}

TEST(TunnelSocket, TheKernelHoldsLittleThatIsNotSent) {
  asio::io_context io;
  loopback_pair p(io);
  limit_unsent(p.a);
  EXPECT_EQ(int_option(p.a, IPPROTO_TCP, TCP_NOTSENT_LOWAT), 128 * 1024);
}

TEST(TunnelSocket, AShortPathGetsABoundedReceiveBuffer) {
  asio::io_context io;
  loopback_pair p(io);
  // A few exchanges, like a handshake's, give the kernel a round trip.
  char byte = 'x';
  for (int i = 0; i < 4; ++i) {
    asio::write(p.a, asio::buffer(&byte, 1));
    asio::read(p.b, asio::buffer(&byte, 1));
    asio::write(p.b, asio::buffer(&byte, 1));
    asio::read(p.a, asio::buffer(&byte, 1));
  }
  bound_receive_queue(p.b);
  // Linux reports twice what was set (its bookkeeping overhead). A loopback round trip is
  // far under a millisecond: at least the 256 KiB floor, at most a 1 ms path's size.
  const int got = int_option(p.b, SOL_SOCKET, SO_RCVBUF);
  EXPECT_GE(got, 2 * 256 * 1024);
  EXPECT_LE(got, 2 * 2500 * 1000);
  // The buffer no longer autotunes: a bulk transfer leaves it as it is.
  std::vector<char> bulk(4 << 20, 'b');
  std::thread writer([&] { asio::write(p.a, asio::buffer(bulk)); });
  std::vector<char> sink(bulk.size());
  asio::read(p.b, asio::buffer(sink));
  writer.join();
  EXPECT_EQ(int_option(p.b, SOL_SOCKET, SO_RCVBUF), got);
}

}  // namespace
}  // namespace tether::transport::detail
