// The UDP relay over real loopback sockets and a real session pair: one end of a flow is
// the channel given to relay_datagrams() with a UDP socket connected to a "device" socket
// this test owns; the test drives the other end. Datagrams pass whole both ways, a flow
// ends idle or refused and the far end learns why, a socket that cannot take more drops
// instead of waiting, and the counters tell what passed.

#include "tether/relay/datagram.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/ip/udp.hpp>
#include <cerrno>

#include "../mux/session_fixture.hpp"
#include "udp_test_data.hpp"

namespace tether::relay {
namespace {

using asio::ip::udp;
using mux::datagram_status;
using namespace std::chrono_literals;

using testing::datagram;
using testing::loopback;
using testing::pattern;

// A UDP socket on loopback standing in for a device port: records what it receives (when
// told to read) and sends what the test says.
struct udp_peer : std::enable_shared_from_this<udp_peer> {
  udp_peer(asio::io_context& io, const udp::endpoint& at) : sock(io, at) {}

  void read() {
    sock.async_receive_from(asio::buffer(buf), from,
                            [self = shared_from_this()](asio::error_code ec, std::size_t n) {
                              if (ec) return;
                              self->received.emplace_back(
                                  self->from, datagram(self->buf.begin(), self->buf.begin() + n));
                              self->read();
                            });
  }
  void send(const datagram& d, const udp::endpoint& to) { sock.send_to(asio::buffer(d), to); }
  udp::endpoint endpoint() const { return sock.local_endpoint(); }

  udp::socket sock;
  std::vector<std::pair<udp::endpoint, datagram>> received;
  datagram buf = datagram(65536);
  udp::endpoint from;
};

// One flow: `near` is the test's end, `far` the end relay_datagrams() relays.
struct flow {
  std::unique_ptr<mux::channel> near, far;
  std::unique_ptr<udp::socket> sock;  // the relay's, connected to the device
  std::shared_ptr<std::optional<datagram_result>> result;
};

class RelayDatagram : public mux::testing::session_fixture {
 protected:
  // A session pair whose server accepts every stream into `accepted_`.
  void connect(mux::session_settings settings = {}) {
    auto on_open = [this](mux::incoming_stream in) { accepted_.push_back(in.accept()); };
    sessions_ = connect_pair(settings, on_open);
  }

  // Opens a flow from the client; both ends.
  std::pair<std::unique_ptr<mux::channel>, std::unique_ptr<mux::channel>> open_flow() {
    const auto before = accepted_.size();
    auto opened = start(sessions_.client->open(mux::target{"dev-1", 53, mux::protocol::udp}));
    EXPECT_TRUE(run_until([&] { return opened->has_value() && accepted_.size() > before; }));
    if (!opened->has_value() || accepted_.size() == before) return {};
    EXPECT_FALSE(opened->value().first) << opened->value().first.message();
    return {std::move(opened->value().second), std::move(accepted_.back())};
  }

  // A flow whose far end relay_datagrams() relays to `device` through a connected socket.
  flow& relay_to(const udp::endpoint& device, std::chrono::milliseconds idle = 60s) {
    auto f = std::make_unique<flow>();
    std::tie(f->near, f->far) = open_flow();
    EXPECT_TRUE(f->near && f->far);
    f->sock = std::make_unique<udp::socket>(io, device.protocol());
    f->sock->connect(device);
    f->result = start(relay_datagrams(*f->sock, *f->far, idle, pool_));
    flows_.push_back(std::move(f));
    return *flows_.back();
  }

  std::shared_ptr<udp_peer> device(const udp::endpoint& at = {loopback, 0}) {
    peers_.push_back(std::make_shared<udp_peer>(io, at));
    return peers_.back();
  }

  // Takes datagrams from `ch` (consuming each) until `count` have come or `limit` passed.
  std::vector<datagram> receive(mux::channel& ch, std::size_t count,
                                std::chrono::milliseconds limit = 10s) {
    std::vector<datagram> out;
    run_until(
        [&] {
          for (;;) {
            auto [ec, d] = ch.try_receive();
            if (ec) return out.size() >= count;
            out.emplace_back(d.begin(), d.end());
            ch.consumed(d.size());
          }
        },
        limit);
    return out;
  }

  // Runs the event loop for `d`, whatever happens.
  void run_for(std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    run_until([&] { return std::chrono::steady_clock::now() >= until; }, d + 1s);
  }

  bool ended(const flow& f) const { return f.result->has_value(); }

  // settle() one handler at a time: a relay that posts itself forever (a datagram it never
  // lets go of) fails the test at the deadline instead of hanging in io.poll().
  bool quiet(std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      io.restart();
      if (io.poll_one() == 0) return true;
    }
    return false;
  }

  void TearDown() override {
    // The sessions close (every relay then ends on its channel) before the sockets and
    // channels the relays use go away with the fixture.
    for (auto& p : peers_) p->sock.close();
    session_fixture::TearDown();
  }

  buffer_pool pool_;
  session_pair sessions_;
  std::vector<std::unique_ptr<mux::channel>> accepted_;
  std::vector<std::unique_ptr<flow>> flows_;
  std::vector<std::shared_ptr<udp_peer>> peers_;
};

const std::vector<std::size_t> datagram_sizes{0, 1, 1400, wire::max_datagram};

TEST_F(RelayDatagram, DatagramsPassWholeBothWaysAndRepliesKeepTheirOrder) {
  connect();
  auto dev = device();
  dev->read();
  auto& f = relay_to(dev->endpoint());

  for (std::uint32_t i = 0; i < datagram_sizes.size(); ++i)
    ASSERT_EQ(f.near->try_send_datagram(pattern(datagram_sizes[i], i)), datagram_status::sent);
  ASSERT_TRUE(run_until([&] { return dev->received.size() == datagram_sizes.size(); }));
  const auto relay_end = f.sock->local_endpoint();
  for (std::uint32_t i = 0; i < datagram_sizes.size(); ++i) {
    EXPECT_EQ(dev->received[i].first, relay_end) << i;
    EXPECT_EQ(dev->received[i].second, pattern(datagram_sizes[i], i)) << i;
  }

  // Replies: the same sizes, then a burst of 200, in order.
  std::uint64_t reply_bytes = 0;
  for (std::uint32_t i = 0; i < datagram_sizes.size(); ++i) {
    dev->send(pattern(datagram_sizes[i], 50 + i), relay_end);
    reply_bytes += datagram_sizes[i];
  }
  for (std::uint32_t i = 0; i < 200; ++i) {
    dev->send(pattern(100 + i, 1000 + i), relay_end);
    reply_bytes += 100 + i;
  }
  const auto got = receive(*f.near, datagram_sizes.size() + 200);
  ASSERT_EQ(got.size(), datagram_sizes.size() + 200);
  for (std::uint32_t i = 0; i < datagram_sizes.size(); ++i)
    EXPECT_EQ(got[i], pattern(datagram_sizes[i], 50 + i)) << i;
  for (std::uint32_t i = 0; i < 200; ++i)
    ASSERT_EQ(got[datagram_sizes.size() + i], pattern(100 + i, 1000 + i)) << i;

  // Closing the near end ends the flow; the counters say what passed.
  f.near.reset();
  ASSERT_TRUE(run_until([&] { return ended(f); }));
  const auto& r = f.result->value();
  EXPECT_EQ(r.error, make_error_code(errc::stream_reset)) << r.error.message();
  EXPECT_EQ(r.counters.from_channel, datagram_sizes.size());
  EXPECT_EQ(r.counters.bytes_from_channel, 0u + 1 + 1400 + wire::max_datagram);
  EXPECT_EQ(r.counters.to_channel, datagram_sizes.size() + 200);
  EXPECT_EQ(r.counters.bytes_to_channel, reply_bytes);
  EXPECT_EQ(r.counters.dropped_total(), 0u) << r.counters.drop_summary();
  EXPECT_FALSE(f.sock->is_open());
}

TEST_F(RelayDatagram, AnIdleFlowEndsTimedOutAndTheFarSideIsTold) {
  connect();
  auto dev = device();
  dev->read();
  auto& f = relay_to(dev->endpoint(), 200ms);

  // Traffic either way keeps it up well past the idle time.
  for (std::uint32_t i = 0; i < 6; ++i) {
    if (i % 2 == 0) {
      ASSERT_EQ(f.near->try_send_datagram(pattern(10, i)), datagram_status::sent);
      ASSERT_TRUE(run_until([&] { return dev->received.size() == i / 2 + 1; }));
    } else {
      dev->send(pattern(10, i), dev->received.back().first);
      ASSERT_EQ(receive(*f.near, 1).size(), 1u);
    }
    run_for(100ms);
    ASSERT_FALSE(ended(f)) << "ended after " << i << " datagrams";
  }

  // Then silence: it ends after the idle time, not before.
  const auto quiet_since = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_until([&] { return ended(f); }, 5s));
  const auto waited = std::chrono::steady_clock::now() - quiet_since;
  EXPECT_GE(waited, 50ms);  // the last datagram passed about 100 ms before quiet_since
  EXPECT_LT(waited, 2s);
  const auto& r = f.result->value();
  EXPECT_EQ(r.error, make_error_code(errc::timed_out)) << r.error.message();
  EXPECT_EQ(r.counters.from_channel, 3u);
  EXPECT_EQ(r.counters.to_channel, 3u);
  EXPECT_FALSE(f.sock->is_open());

  ASSERT_TRUE(run_until([&] { return f.near->error().operator bool(); }));
  EXPECT_EQ(f.near->error(), make_error_code(errc::timed_out));
  EXPECT_EQ(f.near->try_receive().first, make_error_code(errc::timed_out));
}

TEST_F(RelayDatagram, AFlowNobodyUsesEndsAfterTheIdleTime) {
  connect();
  auto dev = device();
  const auto began = std::chrono::steady_clock::now();
  auto& f = relay_to(dev->endpoint(), 200ms);
  ASSERT_TRUE(run_until([&] { return ended(f); }, 5s));
  EXPECT_GE(std::chrono::steady_clock::now() - began, 200ms);
  EXPECT_EQ(f.result->value().error, make_error_code(errc::timed_out));
}

TEST_F(RelayDatagram, APortWithNothingListeningEndsTheFlowRefused) {
  connect();
  udp::endpoint closed_port;
  {
    udp::socket s(io, {loopback, 0});
    closed_port = s.local_endpoint();
  }
  auto& f = relay_to(closed_port);
  ASSERT_EQ(f.near->try_send_datagram(pattern(20, 0)), datagram_status::sent);
  ASSERT_TRUE(run_until([&] { return ended(f); }, 5s)) << "no ICMP port unreachable seen";
  const auto& r = f.result->value();
  EXPECT_EQ(r.error, make_error_code(errc::refused)) << r.error.message();
  EXPECT_EQ(r.counters.from_channel, 1u) << "the datagram left before the port said no";
  EXPECT_FALSE(f.sock->is_open());

  ASSERT_TRUE(run_until([&] { return f.near->error().operator bool(); }));
  EXPECT_EQ(f.near->error(), make_error_code(errc::refused));
  EXPECT_EQ(f.near->try_send_datagram(pattern(20, 1)), datagram_status::failed);
}

TEST_F(RelayDatagram, DeviceDatagramsBeyondTheTunnelsCreditAreDroppedAndCounted) {
  mux::session_settings settings;
  settings.stream_window = 64 * 1024;  // what the near end lets the relay send
  connect(settings);
  auto dev = device();
  dev->read();
  auto& f = relay_to(dev->endpoint());
  ASSERT_EQ(f.near->try_send_datagram(pattern(1, 0)), datagram_status::sent);
  ASSERT_TRUE(run_until([&] { return dev->received.size() == 1; }));
  const auto relay_end = dev->received[0].first;

  // 100 datagrams at once while the near end reads nothing: 46 fit in its window.
  for (std::uint32_t i = 0; i < 100; ++i) dev->send(pattern(1400, i), relay_end);
  ASSERT_TRUE(run_until([&] { return !f.near->try_receive().first; }));
  ASSERT_TRUE(quiet());
  const auto got = receive(*f.near, 46);
  ASSERT_EQ(got.size(), 46u);
  for (std::uint32_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], pattern(1400, i)) << i;

  // Read: the credit is back, and the next one passes.
  ASSERT_TRUE(quiet());
  dev->send(pattern(1400, 500), relay_end);
  const auto next = receive(*f.near, 1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0], pattern(1400, 500));

  f.near.reset();
  ASSERT_TRUE(run_until([&] { return ended(f); }));
  const auto& c = f.result->value().counters;
  EXPECT_EQ(c.to_channel, 47u);
  EXPECT_EQ(c.dropped[static_cast<std::size_t>(drop_reason::no_credit)], 54u);
  EXPECT_EQ(c.dropped_total(), 54u);
  EXPECT_EQ(c.drop_summary(), "54 dropped: 54 no credit");
}

// Loopback UDP never reports a full socket to the sender: the kernel drops at the receiver
// (UdpRcvbufErrors) and send() succeeds. What this shows on loopback is that a device that
// never reads costs the relay nothing: it never waits, the tunnel's credit all comes back,
// and every datagram is accounted for.
TEST_F(RelayDatagram, ADeviceThatNeverReadsNeverStallsTheFlow) {
  mux::session_settings settings;
  settings.stream_window = 64 * 1024;
  connect(settings);
  auto dev = device();
  dev->sock.set_option(asio::socket_base::receive_buffer_size(4096));
  auto& f = relay_to(dev->endpoint());

  // 2,000 datagrams of 1,400 bytes: 2.8 MB through a 64 KiB window.
  const std::uint32_t total = 2000;
  std::uint32_t sent = 0;
  for (int stalls = 0; sent < total && stalls < 2000;) {
    const auto status = f.near->try_send_datagram(pattern(1400, sent));
    if (status == datagram_status::sent) {
      ++sent;
      continue;
    }
    // Out of credit, or (once the peer has grown the window) too much queued to write:
    // either way the sender waits for the relay to catch up.
    ASSERT_TRUE(status == datagram_status::no_credit || status == datagram_status::backlogged)
        << static_cast<int>(status);
    ++stalls;
    ASSERT_TRUE(quiet()) << "the relay never settles";
  }
  ASSERT_EQ(sent, total) << "the credit did not come back";
  ASSERT_TRUE(quiet());
  EXPECT_FALSE(ended(f));

  f.near.reset();
  ASSERT_TRUE(run_until([&] { return ended(f); }));
  const auto& c = f.result->value().counters;
  EXPECT_EQ(c.from_channel + c.dropped[static_cast<std::size_t>(drop_reason::socket_full)], total);
  EXPECT_EQ(c.bytes_from_channel, c.from_channel * 1400);
}

// ---- the downlink alone ------------------------------------------------------------------

class DatagramDownlink : public RelayDatagram {
 protected:
  struct watch {
    int ends = 0;
    asio::error_code why;
    int activity = 0;
  };

  // Detaches the downlink when the test body leaves, before its socket and channel go
  // (declare it after them), whether the body finished or an assertion left early.
  struct attached {
    std::shared_ptr<datagram_downlink> d;
    ~attached() {
      if (d) d->detach();
    }
    datagram_downlink* operator->() const { return d.get(); }
  };

  attached start_downlink(udp::socket& sock, std::optional<udp::endpoint> to, mux::channel& ch,
                          datagram_counters& counters, const std::shared_ptr<watch>& w) {
    return attached{datagram_downlink::start(
        sock, to, ch, counters,
        [w](asio::error_code ec) {
          ++w->ends;
          w->why = ec;
        },
        [w] { ++w->activity; })};
  }
};

// A socket whose buffer really fills: one end of a Unix datagram socket pair whose other
// end never reads (send() then fails with EAGAIN, which loopback UDP never does).
TEST_F(DatagramDownlink, AFullSocketDropsAndCountsWithoutWaitingAndReturnsTheCredit) {
  mux::session_settings settings;
  settings.stream_window = 64 * 1024;
  connect(settings);
  auto [near, far] = open_flow();
  ASSERT_TRUE(near && far);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM, 0, fds), 0) << errno;
  udp::socket full(io);
  full.assign(udp::v4(), fds[0]);
  const int sndbuf = 16 * 1024;
  ASSERT_EQ(::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);

  datagram_counters counters;
  auto w = std::make_shared<watch>();
  auto down = start_downlink(full, std::nullopt, *far, counters, w);

  // 1,000 datagrams of 1,400 bytes through a 64 KiB window: only the credit of the
  // dropped ones lets them all go.
  const std::uint32_t total = 1000;
  std::uint32_t sent = 0;
  for (int stalls = 0; sent < total && stalls < 1000;) {
    const auto status = near->try_send_datagram(pattern(1400, sent));
    if (status == datagram_status::sent) {
      ++sent;
      continue;
    }
    // Out of credit, or (once the peer has grown the window) too much queued to write:
    // either way the sender waits for the relay to catch up.
    ASSERT_TRUE(status == datagram_status::no_credit || status == datagram_status::backlogged)
        << static_cast<int>(status);
    ++stalls;
    ASSERT_TRUE(quiet()) << "the downlink never settles";
  }
  ASSERT_EQ(sent, total) << "the credit of dropped datagrams did not come back";
  ASSERT_TRUE(quiet()) << "the downlink never settles";

  const auto full_drops = counters.dropped[static_cast<std::size_t>(drop_reason::socket_full)];
  EXPECT_GT(full_drops, 0u);
  EXPECT_GT(counters.from_channel, 0u);
  EXPECT_EQ(counters.from_channel + full_drops, total);
  EXPECT_EQ(counters.dropped_total(), full_drops);
  EXPECT_EQ(counters.bytes_from_channel, counters.from_channel * 1400);
  EXPECT_EQ(w->activity, static_cast<int>(counters.from_channel));
  EXPECT_EQ(w->ends, 0);

  // What the counters call delivered is what the other end finds: the first ones, whole.
  std::uint64_t found = 0;
  std::array<std::byte, 2048> buf;
  for (;;) {
    const auto n = ::recv(fds[1], buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) break;
    EXPECT_EQ(n, 1400);
    EXPECT_TRUE(std::equal(buf.begin(), buf.begin() + n, pattern(1400, found).begin())) << found;
    ++found;
  }
  EXPECT_EQ(found, counters.from_channel);
  ::close(fds[1]);
}

TEST_F(DatagramDownlink, SendsToAGivenEndpointAndEndsOnceWhenTheChannelFails) {
  connect();
  auto [near, far] = open_flow();
  ASSERT_TRUE(near && far);
  auto dev = device();
  dev->read();
  udp::socket shared(io, {loopback, 0});  // like the client's listening socket

  datagram_counters counters;
  auto w = std::make_shared<watch>();
  auto down = start_downlink(shared, dev->endpoint(), *far, counters, w);
  for (std::uint32_t i = 0; i < datagram_sizes.size(); ++i)
    ASSERT_EQ(near->try_send_datagram(pattern(datagram_sizes[i], i)), datagram_status::sent);
  ASSERT_TRUE(run_until([&] { return dev->received.size() == datagram_sizes.size(); }));
  for (std::uint32_t i = 0; i < datagram_sizes.size(); ++i) {
    EXPECT_EQ(dev->received[i].first, shared.local_endpoint());
    EXPECT_EQ(dev->received[i].second, pattern(datagram_sizes[i], i));
  }
  EXPECT_EQ(counters.from_channel, datagram_sizes.size());
  EXPECT_EQ(w->activity, static_cast<int>(datagram_sizes.size()));

  near->reset(errc::timed_out);
  ASSERT_TRUE(run_until([&] { return w->ends > 0; }));
  ASSERT_TRUE(quiet());
  EXPECT_EQ(w->ends, 1);
  EXPECT_EQ(w->why, make_error_code(errc::timed_out));
  EXPECT_TRUE(down->ended());
  down->detach();
}

TEST_F(DatagramDownlink, NeverEndsInsideStartAndNothingRunsAfterDetach) {
  connect();
  auto [near, far] = open_flow();
  ASSERT_TRUE(near && far);
  near->reset(errc::stream_reset);
  ASSERT_TRUE(run_until([&, &far = far] { return far->error().operator bool(); }));

  auto dev = device();
  udp::socket sock(io, udp::v4());
  sock.connect(dev->endpoint());
  datagram_counters counters;
  auto w = std::make_shared<watch>();
  auto down = start_downlink(sock, std::nullopt, *far, counters, w);
  EXPECT_EQ(w->ends, 0) << "on_end ran inside start()";
  ASSERT_TRUE(run_until([&] { return w->ends > 0; }));
  EXPECT_EQ(w->why, make_error_code(errc::stream_reset));

  // A second flow, detached at once: its channel fails, and nobody hears of it.
  auto [near2, far2] = open_flow();
  ASSERT_TRUE(near2 && far2);
  auto w2 = std::make_shared<watch>();
  datagram_counters counters2;
  auto down2 = start_downlink(sock, std::nullopt, *far2, counters2, w2);
  ASSERT_TRUE(quiet());
  down2->detach();
  ASSERT_EQ(near2->try_send_datagram(pattern(10, 0)), datagram_status::sent);
  near2.reset();
  far2.reset();  // the channel goes away with a wake-up pending
  down2.d.reset();
  ASSERT_TRUE(quiet());
  EXPECT_EQ(w2->ends, 0);
  EXPECT_EQ(w2->activity, 0);
  EXPECT_EQ(counters2.from_channel, 0u);
  EXPECT_EQ(counters2.dropped_total(), 0u);
}

TEST_F(DatagramDownlink, OneBusyFlowLetsOthersRunEvery64Datagrams) {
  connect();
  auto [near, far] = open_flow();
  ASSERT_TRUE(near && far);
  for (std::uint32_t i = 0; i < 200; ++i)
    ASSERT_EQ(near->try_send_datagram(pattern(50, i)), datagram_status::sent);
  ASSERT_TRUE(quiet());

  auto dev = device();  // never reads: only the sends are counted
  udp::socket sock(io, udp::v4());
  sock.connect(dev->endpoint());
  datagram_counters counters;
  auto w = std::make_shared<watch>();
  auto down = start_downlink(sock, std::nullopt, *far, counters, w);
  for (int i = 0; i < 10 && w->activity == 0; ++i) {
    io.restart();
    io.poll_one();
  }
  EXPECT_EQ(w->activity, 64) << "one turn of the event loop";
  ASSERT_TRUE(quiet());
  EXPECT_EQ(w->activity, 200);
  EXPECT_EQ(counters.from_channel, 200u);
  down->detach();
}

// ---- counters ----------------------------------------------------------------------------

TEST(DatagramCounters, DescribeEveryReason) {
  EXPECT_STREQ(describe(drop_reason::no_credit), "no credit");
  EXPECT_STREQ(describe(drop_reason::backlogged), "session output backlogged");
  EXPECT_STREQ(describe(drop_reason::opening), "flow still opening");
  EXPECT_STREQ(describe(drop_reason::socket_full), "socket buffer full");
  EXPECT_STREQ(describe(drop_reason::too_large), "datagram too large");
}

TEST(DatagramCounters, CountSendSortsEachStatus) {
  datagram_counters c;
  c.count_send(datagram_status::sent, 100);
  c.count_send(datagram_status::sent, 0);
  c.count_send(datagram_status::no_credit, 50);
  c.count_send(datagram_status::backlogged, 50);
  c.count_send(datagram_status::too_large, 70000);
  c.count_send(datagram_status::failed, 10);
  EXPECT_EQ(c.to_channel, 2u);
  EXPECT_EQ(c.bytes_to_channel, 100u);
  EXPECT_EQ(c.dropped[static_cast<std::size_t>(drop_reason::no_credit)], 1u);
  EXPECT_EQ(c.dropped[static_cast<std::size_t>(drop_reason::backlogged)], 1u);
  EXPECT_EQ(c.dropped[static_cast<std::size_t>(drop_reason::too_large)], 1u);
  EXPECT_EQ(c.dropped_total(), 3u) << "a failed flow is ending, not dropping";
}

TEST(DatagramCounters, DropSummaryNamesOnlyWhatHappened) {
  datagram_counters c;
  EXPECT_EQ(c.drop_summary(), "");
  for (int i = 0; i < 10; ++i) c.drop(drop_reason::no_credit);
  c.drop(drop_reason::socket_full);
  c.drop(drop_reason::socket_full);
  EXPECT_EQ(c.drop_summary(), "12 dropped: 10 no credit, 2 socket buffer full");

  datagram_counters total;
  total += c;
  total += c;
  total.to_channel = 1;
  c.from_channel = 5;
  c.bytes_from_channel = 500;
  total += c;
  EXPECT_EQ(total.dropped_total(), 36u);
  EXPECT_EQ(total.to_channel, 1u);
  EXPECT_EQ(total.from_channel, 5u);
  EXPECT_EQ(total.bytes_from_channel, 500u);
  EXPECT_EQ(total.drop_summary(), "36 dropped: 30 no credit, 6 socket buffer full");
}

}  // namespace
}  // namespace tether::relay
