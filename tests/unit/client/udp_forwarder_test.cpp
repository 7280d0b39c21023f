// UDP through the local proxy (-U): a real client::proxy (or a bare forwarder) over a real
// session pair whose server side plays the device, with real loopback UDP sockets as the
// local programs. Each source is one flow and gets exactly its own replies, byte for byte;
// the flow table is bounded (least recently used goes first) and idle flows end; a refusal
// at the device is reported once; stopping does not wait for UDP.

#include "tether/client/udp_forwarder.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>
#include <deque>
#include <random>
#include <sstream>

#include "../mux/session_fixture.hpp"
#include "dial_outcome_of.hpp"
#include "tether/client/proxy.hpp"
#include "tether/mux/use_tuple.hpp"

namespace tether::client {
namespace {

using testing::give;

using asio::ip::udp;
using namespace std::chrono_literals;
using datagram = std::vector<std::byte>;

datagram text(std::string_view s) {
  const auto b = mux::testing::as_bytes(s);
  return {b.begin(), b.end()};
}

datagram random_datagram(std::size_t n, std::mt19937& rng) {
  datagram d(n);
  for (auto& b : d) b = std::byte(static_cast<std::uint8_t>(rng()));
  return d;
}

mapping udp_mapping() {
  mapping m;
  m.proto = mux::protocol::udp;
  m.bind_host = "127.0.0.1";
  m.local_port = 0;
  m.device = "dev-42";
  m.device_port = 53;
  return m;
}

struct recorded_events final : event_sink {
  struct stream_failure {
    std::string local;
    errc reason;
    std::string message;
  };
  std::vector<std::pair<mapping, std::string>> listening_on;
  std::vector<stream_failure> failures;

  void listening(const mapping& m, const std::string&, const std::string& local) override {
    listening_on.emplace_back(m, local);
  }
  void connected(const std::string&) override {}
  void disconnected(const std::string&, std::chrono::milliseconds) override {}
  void stream_error(const mapping&, const std::string& local, errc reason,
                    const std::string& message) override {
    failures.push_back({local, reason, message});
  }
};

// One udp stream as the device side (the server session) saw it.
struct device_stream {
  mux::target target;
  std::vector<datagram> received;
  bool ended = false;
  asio::error_code why;  // what ended it
};

enum class udp_device_mode {
  echo,    // every datagram goes back as it came
  refuse,  // the first datagram gets RESET refused (as after an ICMP port unreachable)
};

// The device: (a free function, since a lambda coroutine would outlive its captures).
asio::awaitable<void> serve_device(std::unique_ptr<mux::channel> ch,
                                   std::shared_ptr<device_stream> rec, udp_device_mode mode) {
  for (;;) {
    auto [ec, d] = co_await ch->receive();
    if (ec) {
      rec->ended = true;
      rec->why = ec;
      co_return;
    }
    datagram copy(d.begin(), d.end());
    ch->consumed(d.size());
    rec->received.push_back(copy);
    if (mode == udp_device_mode::refuse) {
      ch->reset(errc::refused);
      rec->ended = true;
      rec->why = make_error_code(errc::refused);
      co_return;
    }
    EXPECT_EQ(ch->try_send_datagram(copy), mux::datagram_status::sent);
  }
}

// A local program: a UDP socket on 127.0.0.1 that keeps what it receives, and from whom.
struct local_source {
  explicit local_source(asio::io_context& io)
      : sock(io, udp::endpoint(asio::ip::address_v4::loopback(), 0)) {
    receive();
  }
  void receive() {
    sock.async_receive_from(asio::buffer(buf), from, [this](asio::error_code ec, std::size_t n) {
      if (ec) return;  // closed: `this` may be gone
      received.emplace_back(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      senders.push_back(from);
      receive();
    });
  }
  void send(const udp::endpoint& to, const datagram& d) { sock.send_to(asio::buffer(d), to); }

  udp::socket sock;
  datagram buf = datagram(65536);
  udp::endpoint from;
  std::deque<datagram> received;
  std::vector<udp::endpoint> senders;
};

udp::endpoint parse_local(const std::string& text) {
  const auto colon = text.rfind(':');
  return {asio::ip::make_address(text.substr(0, colon)),
          static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1)))};
}

class UdpForwarder : public mux::testing::session_fixture {
 protected:
  // A client/server session pair, the server's streams served as `mode` says.
  void connect_device(udp_device_mode mode = udp_device_mode::echo) {
    auto pair = connect_pair({}, [this, mode](mux::incoming_stream in) {
      auto rec = std::make_shared<device_stream>();
      rec->target = in.target();
      device.push_back(rec);
      asio::co_spawn(ex(), serve_device(in.accept(), rec, mode), asio::detached);
    });
    client_session = pair.client;
  }

  // A proxy with the one -U mapping, listening and running.
  void start_proxy(proxy_options o, udp_device_mode mode = udp_device_mode::echo) {
    connect_device(mode);
    o.server = "test";
    std::shared_ptr<mux::tunnel> t = client_session;
    proxy_ = std::make_unique<proxy>(
        ex(), std::vector<mapping>{udp_mapping()}, [t] { return give(t); }, events, o);
    auto first = start(proxy_->connect_first());
    ASSERT_TRUE(run_until([&] { return first->has_value(); }));
    ASSERT_FALSE(proxy_->listen());
    ASSERT_EQ(events.listening_on.size(), 1u);
    local = parse_local(events.listening_on[0].second);
    ran = start(proxy_->run());
  }

  void TearDown() override {
    if (proxy_) {
      proxy_->stop();
      if (ran) {
        EXPECT_TRUE(run_until([&] { return ran->has_value(); })) << "run() did not finish";
      }
      proxy_.reset();
    }
    forwarder_.reset();
    session_fixture::TearDown();
  }

  local_source& new_source() {
    sources.push_back(std::make_unique<local_source>(io));
    return *sources.back();
  }

  // Sends `d` from `src` and waits for the one reply; false if none came in time.
  bool round_trip(local_source& src, const datagram& d) {
    const auto before = src.received.size();
    src.send(local, d);
    if (!run_until([&] { return src.received.size() > before; }, 5s)) return false;
    EXPECT_EQ(src.received.back(), d);
    EXPECT_EQ(src.senders.back(), local);
    return true;
  }

  std::size_t ended_streams() const {
    std::size_t n = 0;
    for (const auto& d : device) n += d->ended;
    return n;
  }

  recorded_events events;
  std::shared_ptr<mux::session> client_session;
  std::vector<std::shared_ptr<device_stream>> device;
  std::unique_ptr<proxy> proxy_;
  std::shared_ptr<std::optional<dial_outcome>> ran;
  std::unique_ptr<udp_forwarder> forwarder_;
  udp::endpoint local;
  std::vector<std::unique_ptr<local_source>> sources;
};

TEST_F(UdpForwarder, ListeningEventNamesTheRealPort) {
  start_proxy({});
  ASSERT_EQ(events.listening_on.size(), 1u);
  EXPECT_EQ(events.listening_on[0].first.proto, mux::protocol::udp);
  EXPECT_NE(local.port(), 0);
  EXPECT_EQ(events.listening_on[0].second, "127.0.0.1:" + std::to_string(local.port()));
}

TEST_F(UdpForwarder, FourSourcesAtOnceEachGetOnlyTheirOwnRepliesByteExact) {
  start_proxy({});
  std::vector<local_source*> src;
  for (int i = 0; i < 4; ++i) src.push_back(&new_source());
  std::mt19937 rng(9);

  // Rounds of one datagram from each source at once. One source per round sends a large one
  // (the largest the tunnel carries in the first rounds), the others small ones: four
  // full-size datagrams at once could overflow a default socket receive buffer, which is
  // UDP, not a fault of the tunnel.
  constexpr int rounds = 250;
  for (int r = 0; r < rounds; ++r) {
    std::vector<datagram> sent;
    for (int i = 0; i < 4; ++i) {
      std::size_t n;
      if (i == r % 4)
        n = r < 4 ? wire::max_datagram : 16384 + rng() % (wire::max_datagram - 16384 + 1);
      else if ((r + i) % 7 == 0)
        n = 0;
      else
        n = rng() % 4097;
      sent.push_back(random_datagram(n, rng));
    }
    std::vector<std::size_t> before;
    for (int i = 0; i < 4; ++i) before.push_back(src[i]->received.size());
    for (int i = 0; i < 4; ++i) src[i]->send(local, sent[i]);
    ASSERT_TRUE(run_until([&] {
      for (int i = 0; i < 4; ++i)
        if (src[i]->received.size() == before[i]) return false;
      return true;
    })) << "round "
        << r;
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(src[i]->received.size(), before[i] + 1) << "round " << r << " source " << i;
      EXPECT_EQ(src[i]->received.back().size(), sent[i].size()) << "round " << r;
      EXPECT_TRUE(src[i]->received.back() == sent[i]) << "round " << r << " source " << i;
      EXPECT_EQ(src[i]->senders.back(), local);
    }
  }
  settle();
  // One flow (one stream) per source, none ended, every datagram seen once at the device.
  ASSERT_EQ(device.size(), 4u);
  for (const auto& d : device) {
    EXPECT_EQ(d->target.proto, mux::protocol::udp);
    EXPECT_EQ(d->target.device, "dev-42");
    EXPECT_EQ(d->target.port, 53);
    EXPECT_EQ(d->received.size(), static_cast<std::size_t>(rounds));
    EXPECT_FALSE(d->ended);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(src[i]->received.size(), static_cast<std::size_t>(rounds));
  EXPECT_TRUE(events.failures.empty());
}

TEST_F(UdpForwarder, PastTheFlowBoundTheLeastRecentlyUsedFlowIsReset) {
  proxy_options o;
  o.udp_max_flows = 2;
  start_proxy(o);
  auto& a = new_source();
  auto& b = new_source();
  auto& c = new_source();
  ASSERT_TRUE(round_trip(a, text("a1")));
  ASSERT_TRUE(round_trip(b, text("b1")));
  ASSERT_TRUE(round_trip(c, text("c1")));  // a third source: a's flow goes
  ASSERT_TRUE(run_until([&] { return device.size() == 3 && device[0]->ended; }));
  EXPECT_EQ(device[0]->why, make_error_code(errc::stream_reset));
  EXPECT_FALSE(device[1]->ended);
  EXPECT_FALSE(device[2]->ended);

  // a again: a new flow on a new stream, and now b is the least recently used.
  ASSERT_TRUE(round_trip(a, text("a2")));
  ASSERT_TRUE(run_until([&] { return device.size() == 4 && device[1]->ended; }));
  EXPECT_EQ(device[3]->received, std::vector<datagram>{text("a2")});
  EXPECT_FALSE(device[2]->ended);
  EXPECT_FALSE(device[3]->ended);
  EXPECT_TRUE(events.failures.empty());
}

TEST_F(UdpForwarder, UseKeepsAFlowFirstInLine) {
  proxy_options o;
  o.udp_max_flows = 2;
  start_proxy(o);
  auto& a = new_source();
  auto& b = new_source();
  auto& c = new_source();
  ASSERT_TRUE(round_trip(a, text("a1")));
  ASSERT_TRUE(round_trip(b, text("b1")));
  ASSERT_TRUE(round_trip(a, text("a2")));  // now b is the least recently used
  ASSERT_TRUE(round_trip(c, text("c1")));
  ASSERT_TRUE(run_until([&] { return device.size() == 3 && device[1]->ended; }));
  EXPECT_FALSE(device[0]->ended);
}

TEST_F(UdpForwarder, AnIdleFlowEndsAndTheNextDatagramOpensANewOne) {
  proxy_options o;
  o.udp_idle = 200ms;
  start_proxy(o);
  auto& a = new_source();
  // Busy for three idle periods: the flow stays.
  const auto busy_until = std::chrono::steady_clock::now() + 600ms;
  int i = 0;
  auto last_reply = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < busy_until) {
    ASSERT_TRUE(round_trip(a, text("ping " + std::to_string(i++))));
    last_reply = std::chrono::steady_clock::now();
    asio::steady_timer pause(io, 50ms);
    bool paused = false;
    pause.async_wait([&](asio::error_code) { paused = true; });
    run_until([&] { return paused; });
  }
  ASSERT_EQ(device.size(), 1u);
  EXPECT_FALSE(device[0]->ended);

  ASSERT_TRUE(run_until([&] { return device[0]->ended; }, 3s));
  EXPECT_GE(std::chrono::steady_clock::now() - last_reply, 180ms);
  EXPECT_EQ(device[0]->why, make_error_code(errc::timed_out));

  ASSERT_TRUE(round_trip(a, text("again")));
  ASSERT_EQ(device.size(), 2u);
  EXPECT_EQ(device[1]->received, std::vector<datagram>{text("again")});
  EXPECT_FALSE(device[1]->ended);
  EXPECT_TRUE(events.failures.empty());
}

TEST_F(UdpForwarder, ARefusedFlowIsReportedOnceAndTheNextDatagramOpensANewFlow) {
  start_proxy({}, udp_device_mode::refuse);
  auto& a = new_source();
  // Two at once: both belong to the flow that is refused, which is reported once.
  a.send(local, text("q1"));
  a.send(local, text("q1 again"));
  ASSERT_TRUE(run_until([&] { return !events.failures.empty(); }));
  settle();
  asio::steady_timer pause(io, 300ms);  // anything more would come by now
  bool paused = false;
  pause.async_wait([&](asio::error_code) { paused = true; });
  run_until([&] { return paused; });
  ASSERT_EQ(events.failures.size(), 1u);
  EXPECT_EQ(events.failures[0].reason, errc::refused);
  EXPECT_EQ(events.failures[0].message,
            "device dev-42 port 53 refused the datagram (nothing listening)");
  EXPECT_EQ(events.failures[0].local, events.listening_on[0].second);
  EXPECT_EQ(device.size(), 1u);
  EXPECT_TRUE(a.received.empty());

  a.send(local, text("q2"));
  ASSERT_TRUE(run_until([&] { return events.failures.size() == 2; }));
  ASSERT_EQ(device.size(), 2u);
  EXPECT_EQ(device[1]->received, std::vector<datagram>{text("q2")});
}

TEST_F(UdpForwarder, StopEndsEveryFlowAtOnce) {
  proxy_options o;
  o.drain = 10s;
  start_proxy(o);
  auto& a = new_source();
  auto& b = new_source();
  ASSERT_TRUE(round_trip(a, text("a")));
  ASSERT_TRUE(round_trip(b, text("b")));
  EXPECT_EQ(proxy_->active_connections(), 0u);  // UDP flows are not drained
  const auto stopped_at = std::chrono::steady_clock::now();
  proxy_->stop();
  ASSERT_TRUE(run_until([&] { return ran->has_value() && ended_streams() == 2; }, 3s));
  EXPECT_LT(std::chrono::steady_clock::now() - stopped_at, 2s);
  // And the local socket is closed: nothing reaches the device any more.
  a.send(local, text("late"));
  settle();
  EXPECT_EQ(device.size(), 2u);
}

// ---- the forwarder on its own, with an opener the test holds back --------------------------

// Logs go to `out` while this lives.
struct captured_log {
  explicit captured_log(std::ostream& out) : previous(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>(
        "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~captured_log() { spdlog::set_default_logger(previous); }
  std::shared_ptr<spdlog::logger> previous;
};

asio::awaitable<std::unique_ptr<mux::channel>> open_when(asio::steady_timer& gate,
                                                         std::shared_ptr<mux::session> s) {
  co_await gate.async_wait(use_tuple);  // cancelled by the test: go
  const mux::target t{"dev-42", 53, mux::protocol::udp};
  auto [ec, ch] = co_await s->open(t);
  EXPECT_FALSE(ec) << ec.message();
  co_return std::move(ch);
}

TEST_F(UdpForwarder, WhileOpeningAFlowKeepsSixteenDatagramsAndReportsTheRestAsDropped) {
  connect_device();
  std::ostringstream log;
  const captured_log capture(log);

  asio::steady_timer gate(io, asio::steady_timer::time_point::max());
  udp::socket sock(io, udp::endpoint(asio::ip::address_v4::loopback(), 0));
  local = sock.local_endpoint();
  const auto local_text = "127.0.0.1:" + std::to_string(local.port());
  udp_forwarder_options o;
  o.drop_report_interval = 300ms;
  auto session = client_session;
  forwarder_ = std::make_unique<udp_forwarder>(
      std::move(sock), udp_mapping(), local_text, events,
      [&gate, session] { return open_when(gate, session); }, o);
  forwarder_->start();

  auto& a = new_source();
  for (int i = 0; i < 20; ++i) a.send(local, text("d" + std::to_string(i)));
  ASSERT_TRUE(run_until([&] { return forwarder_->counters().dropped_total() == 4; }));
  EXPECT_EQ(forwarder_->flow_count(), 1u);
  gate.cancel();  // the stream opens; the sixteen kept go first, in order
  ASSERT_TRUE(run_until([&] { return a.received.size() == 16; }));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(a.received[i], text("d" + std::to_string(i)));
  ASSERT_EQ(device.size(), 1u);
  EXPECT_EQ(device[0]->received.size(), 16u);

  const auto opening = static_cast<std::size_t>(relay::drop_reason::opening);
  EXPECT_EQ(forwarder_->counters().dropped[opening], 4u);
  EXPECT_EQ(forwarder_->counters().to_channel, 16u);
  EXPECT_EQ(forwarder_->counters().from_channel, 16u);
  ASSERT_TRUE(run_until([&] { return log.str().find("dropped") != std::string::npos; }, 3s));
  EXPECT_NE(log.str().find("udp " + local_text +
                           " -> dev-42:53: 4 dropped in the last 0.3 s: 4 flow still opening"),
            std::string::npos)
      << log.str();
  // Once only: no new drops, no new report.
  const auto reports = [&] {
    std::size_t n = 0;
    for (auto p = log.str().find("dropped in the last"); p != std::string::npos;
         p = log.str().find("dropped in the last", p + 1))
      ++n;
    return n;
  };
  asio::steady_timer pause(io, 700ms);
  bool paused = false;
  pause.async_wait([&](asio::error_code) { paused = true; });
  run_until([&] { return paused; });
  EXPECT_EQ(reports(), 1u);

  forwarder_->stop();
  EXPECT_EQ(forwarder_->flow_count(), 0u);
  ASSERT_TRUE(run_until([&] { return device[0]->ended; }));
  EXPECT_EQ(device[0]->why, make_error_code(errc::stream_reset));
}

TEST_F(UdpForwarder, DatagramsAboveTheTunnelsLimitAreDroppedWithoutAFlow) {
  // Only IPv6 carries UDP payloads above 65,507 bytes.
  connect_device();
  asio::error_code ec;
  udp::socket sock(io);
  sock.open(udp::v6(), ec);
  if (!ec) sock.bind(udp::endpoint(asio::ip::address_v6::loopback(), 0), ec);
  if (ec) GTEST_SKIP() << "no IPv6 loopback: " << ec.message();
  local = sock.local_endpoint();
  auto session = client_session;
  asio::steady_timer gate(io, asio::steady_timer::time_point::max());
  forwarder_ = std::make_unique<udp_forwarder>(
      std::move(sock), udp_mapping(), "[::1]:" + std::to_string(local.port()), events,
      [&gate, session] { return open_when(gate, session); }, udp_forwarder_options{});
  forwarder_->start();
  udp::socket src(io, udp::endpoint(asio::ip::address_v6::loopback(), 0));
  std::mt19937 rng(1);
  src.send_to(asio::buffer(random_datagram(wire::max_datagram + 1, rng)), local);
  const auto too_large = static_cast<std::size_t>(relay::drop_reason::too_large);
  ASSERT_TRUE(run_until([&] { return forwarder_->counters().dropped[too_large] == 1; }));
  EXPECT_EQ(forwarder_->flow_count(), 0u);
  forwarder_->stop();
}

}  // namespace
}  // namespace tether::client
