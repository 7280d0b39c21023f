// Batched UDP system calls over real loopback sockets: what goes in a batch arrives as the
// same datagrams, whole and in order, however the batch was cut into calls (one sendmmsg,
// segmented runs, datagrams alone), and a receive batch hands back each datagram with its
// source.

#include "tether/relay/udp_batch.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>
#include <cerrno>
#include <vector>

#include "udp_test_data.hpp"

namespace tether::relay {
namespace {

using asio::ip::udp;
using testing::datagram;
using testing::loopback;
using testing::pattern;

class UdpBatch : public ::testing::Test {
 protected:
  // A bound, non-blocking socket with room for a few MiB of datagrams.
  udp::socket open() {
    udp::socket s(io_, {loopback, 0});
    s.non_blocking(true);
    s.set_option(asio::socket_base::receive_buffer_size(4 << 20));
    return s;
  }

  // Everything waiting on `s`, datagram by datagram (plain recv, not the code under test).
  static std::vector<datagram> drain(udp::socket& s) {
    std::vector<datagram> out;
    datagram buf(70000);
    for (;;) {
      const auto n = ::recv(s.native_handle(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0) break;
      out.emplace_back(buf.begin(), buf.begin() + n);
    }
    return out;
  }

  asio::io_context io_;
};

TEST_F(UdpBatch, AReceiveTakesWhatWaitsWithSizesAndSources) {
  auto rx = open();
  auto a = open();
  auto b = open();
  const std::vector<std::size_t> sizes{0, 1, 1400, 65507, 64};
  for (std::uint32_t i = 0; i < sizes.size(); ++i)
    (i % 2 ? b : a).send_to(asio::buffer(pattern(sizes[i], i)), rx.local_endpoint());

  auto& batch = udp_receive_batch::for_this_thread();
  asio::error_code ec;
  const auto n = batch.receive(rx, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(n, sizes.size());
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto d = batch.data(i);
    EXPECT_EQ(datagram(d.begin(), d.end()), pattern(sizes[i], i)) << i;
    EXPECT_FALSE(batch.truncated(i)) << i;
    EXPECT_EQ(batch.source(i), (i % 2 ? b : a).local_endpoint()) << i;
  }

  EXPECT_EQ(batch.receive(rx, ec), 0u);
  EXPECT_EQ(ec, asio::error::would_block);
}

TEST_F(UdpBatch, AReceiveTakesAtMostABatchAndTheNextOneTheRest) {
  auto rx = open();
  auto tx = open();
  const std::uint32_t total = udp_batch_size + 5;
  for (std::uint32_t i = 0; i < total; ++i)
    tx.send_to(asio::buffer(pattern(100, i)), rx.local_endpoint());

  auto& batch = udp_receive_batch::for_this_thread();
  asio::error_code ec;
  ASSERT_EQ(batch.receive(rx, ec), udp_batch_size);
  const auto first = batch.data(0);
  EXPECT_EQ(datagram(first.begin(), first.end()), pattern(100, 0));
  ASSERT_EQ(batch.receive(rx, ec), 5u);
  const auto last = batch.data(4);
  EXPECT_EQ(datagram(last.begin(), last.end()), pattern(100, total - 1));
}

TEST_F(UdpBatch, ARefusedPortIsReportedByTheNextReceive) {
  udp::endpoint closed;
  {
    auto s = open();
    closed = s.local_endpoint();
  }
  auto s = open();
  s.connect(closed);
  s.send(asio::buffer(pattern(10, 0)));  // answered by ICMP port unreachable
  auto& batch = udp_receive_batch::for_this_thread();
  asio::error_code ec;
  EXPECT_EQ(batch.receive(s, ec), 0u);
  EXPECT_EQ(ec, asio::error::connection_refused) << ec.message();
}

// Runs of one size (sent segmented), a shorter datagram ending a run, empty datagrams,
// sizes changing from one to the next: the receiver sees exactly what was added.
TEST_F(UdpBatch, EverySendArrivesAsTheDatagramsAddedInOrder) {
  auto rx = open();
  auto tx = open();
  const auto to = rx.local_endpoint();
  std::vector<datagram> sent;
  for (std::uint32_t i = 0; i < 40; ++i) sent.push_back(pattern(1400, i));
  sent.push_back(pattern(700, 40));  // ends the run
  sent.push_back(pattern(1400, 41));
  sent.push_back(pattern(0, 42));
  sent.push_back(pattern(0, 43));
  for (std::uint32_t i = 0; i < 20; ++i) sent.push_back(pattern(64, 44 + i));
  sent.push_back(pattern(65507, 70));
  sent.push_back(pattern(1, 71));
  for (std::uint32_t i = 0; i < 100; ++i) sent.push_back(pattern(10 + i % 3, 80 + i));

  auto& batch = udp_send_batch::for_this_thread();
  const auto initial = udp_send_batch::initial_gso_limit(tx);
  EXPECT_GT(initial, 1400u) << "a UDP socket on this kernel segments";
  auto gso_limit = initial;
  std::size_t next = 0;
  while (next < sent.size()) {
    batch.clear();
    while (next < sent.size() && batch.fits(sent[next].size())) batch.add(sent[next++], &to);
    const auto r = batch.send(tx, 0, gso_limit);
    ASSERT_FALSE(r.error) << r.error.message();
    ASSERT_EQ(r.sent, batch.size());
  }
  EXPECT_EQ(gso_limit, initial) << "loopback took every segmented send";
  const auto got = drain(rx);
  ASSERT_EQ(got.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) ASSERT_EQ(got[i], sent[i]) << i;
}

TEST_F(UdpBatch, EachDatagramGoesToItsOwnDestination) {
  auto rx1 = open();
  auto rx2 = open();
  auto tx = open();
  const auto to1 = rx1.local_endpoint();
  const auto to2 = rx2.local_endpoint();
  auto& batch = udp_send_batch::for_this_thread();
  batch.clear();
  // Same size throughout: only the destination splits the runs.
  for (std::uint32_t i = 0; i < 30; ++i) batch.add(pattern(500, i), (i / 5) % 2 ? &to2 : &to1);
  auto gso_limit = udp_send_batch::initial_gso_limit(tx);
  const auto r = batch.send(tx, 0, gso_limit);
  ASSERT_FALSE(r.error) << r.error.message();
  ASSERT_EQ(r.sent, 30u);
  const auto got1 = drain(rx1);
  const auto got2 = drain(rx2);
  ASSERT_EQ(got1.size(), 15u);
  ASSERT_EQ(got2.size(), 15u);
  std::size_t k1 = 0, k2 = 0;
  for (std::uint32_t i = 0; i < 30; ++i) {
    if ((i / 5) % 2)
      EXPECT_EQ(got2[k2++], pattern(500, i)) << i;
    else
      EXPECT_EQ(got1[k1++], pattern(500, i)) << i;
  }
}

TEST_F(UdpBatch, SendingFromTheMiddleOfABatchSendsTheRest) {
  auto rx = open();
  auto tx = open();
  tx.connect(rx.local_endpoint());
  auto& batch = udp_send_batch::for_this_thread();
  batch.clear();
  for (std::uint32_t i = 0; i < 10; ++i) batch.add(pattern(100 + i, i), nullptr);
  auto gso_limit = udp_send_batch::initial_gso_limit(tx);
  const auto r = batch.send(tx, 4, gso_limit);
  ASSERT_FALSE(r.error);
  EXPECT_EQ(r.sent, 6u);
  const auto got = drain(rx);
  ASSERT_EQ(got.size(), 6u);
  for (std::uint32_t i = 0; i < 6; ++i) EXPECT_EQ(got[i], pattern(104 + i, 4 + i));
}

// A socket that is not UDP would take a segmented send as one long datagram: it never gets
// one. And when the kernel refuses a segmented send, its datagrams go again one by one and
// the limit stays lowered. (A Unix datagram socket with a small buffer refuses the run for
// its length.)
TEST_F(UdpBatch, ARefusedSegmentedSendGoesDatagramByDatagram) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM, 0, fds), 0) << errno;
  udp::socket tx(io_);
  tx.assign(udp::v4(), fds[0]);
  EXPECT_EQ(udp_send_batch::initial_gso_limit(tx), 0u);
  const int sndbuf = 4096;  // the kernel doubles it: 8 KiB, well below the run
  ASSERT_EQ(::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
  const int rcvbuf = 1 << 20;
  ASSERT_EQ(::setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);

  auto& batch = udp_send_batch::for_this_thread();
  batch.clear();
  for (std::uint32_t i = 0; i < 20; ++i) batch.add(pattern(1000, i), nullptr);
  std::size_t gso_limit = 65535;  // as if it were UDP: the run (20,000 bytes) is tried
  const auto r = batch.send(tx, 0, gso_limit);
  EXPECT_LT(gso_limit, 1000u);
  // Each went alone; how many fit depends on the kernel's accounting of the small buffer.
  EXPECT_GT(r.sent, 0u);
  std::vector<datagram> got;
  datagram buf(70000);
  for (;;) {
    const auto n = ::recv(fds[1], buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) break;
    got.emplace_back(buf.begin(), buf.begin() + n);
  }
  ASSERT_EQ(got.size(), r.sent);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], pattern(1000, i)) << i;
  if (r.sent < 20) {
    EXPECT_EQ(r.error, asio::error::would_block) << r.error.message();
  }
  ::close(fds[1]);
}

}  // namespace
}  // namespace tether::relay
