#include "tether/server/session_directory.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <thread>

#include "tether/server/catalog.hpp"

namespace tether::server {
namespace {

// A channel that accepts every send and hands out `incoming` once per receive.
class fake_channel final : public mux::channel {
 public:
  std::string incoming = "hello";
  std::size_t sent = 0;
  bool was_reset = false;

  asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() override {
    co_return std::pair{asio::error_code{}, std::size_t{1 << 20}};
  }
  asio::awaitable<asio::error_code> send(std::span<const std::byte> data) override {
    sent += data.size();
    co_return asio::error_code{};
  }
  asio::awaitable<asio::error_code> send_eof() override { co_return asio::error_code{}; }
  asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() override {
    co_return try_receive();
  }
  std::pair<asio::error_code, std::span<const std::byte>> try_receive() override {
    return {asio::error_code{}, std::as_bytes(std::span(incoming))};
  }
  void when_receivable(std::function<void()>) override {}
  void consumed(std::size_t) override {}
  mux::datagram_status try_send_datagram(std::span<const std::byte> d) override {
    sent += d.size();
    return mux::datagram_status::sent;
  }
  void reset(errc) override { was_reset = true; }
  asio::error_code error() const noexcept override { return {}; }
};

TEST(SessionDirectory, ListsSessionsInOrderUntilRemoved) {
  session_directory dir;
  auto a = dir.add("laptop", "127.0.0.1:5000", "");
  auto b = dir.add("dev-77-agent", "127.0.0.2:6000", "dev-77");
  EXPECT_LT(a->id, b->id);
  std::size_t total = 0;
  auto list = dir.snapshot(10, &total);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(total, 2u);
  EXPECT_EQ(list[0].credential, "laptop");
  EXPECT_EQ(list[1].agent_for, "dev-77");
  EXPECT_EQ(dir.snapshot(1, &total).size(), 1u);  // bounded; total still says 2
  EXPECT_EQ(total, 2u);
  dir.remove(a);
  dir.remove(a);  // harmless
  list = dir.snapshot(10);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].peer, "127.0.0.2:6000");
}

TEST(SessionDirectory, MeteredChannelCountsBytesEachWayAndOpenStreams) {
  session_directory dir;
  device_activity devices;
  auto s = dir.add("laptop", "127.0.0.1:5000", "");
  auto inner = std::make_unique<fake_channel>();
  auto* raw = inner.get();
  auto ch = metered_channel(std::move(inner), mux::protocol::tcp, s, devices.meter("dev-1"));
  EXPECT_EQ(read_meter(s->by_protocol[0]).streams_open, 1u);
  EXPECT_EQ(devices.find("dev-1").total().streams_open, 1u);

  asio::io_context io;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const std::string out = "0123456789";
        co_await ch->send(std::as_bytes(std::span(out)));  // from the device, to the client
        auto [ec, data] = co_await ch->receive();           // from the client, to the device
        EXPECT_FALSE(ec);
        EXPECT_EQ(data.size(), 5u);
      },
      asio::detached);
  io.run();
  (void)ch->try_receive();
  EXPECT_EQ(raw->sent, 10u);

  const auto t = read_meter(s->by_protocol[0]);
  EXPECT_EQ(t.bytes_from_device, 10u);
  EXPECT_EQ(t.bytes_to_device, 10u);
  EXPECT_EQ(read_meter(s->by_protocol[1]).bytes_to_device, 0u);  // udp untouched
  const auto d = devices.find("dev-1").total();
  EXPECT_EQ(d.bytes_from_device, 10u);
  EXPECT_EQ(d.bytes_to_device, 10u);

  ch->reset(errc::going_away);
  EXPECT_TRUE(raw->was_reset);
  ch.reset();  // the stream ends
  EXPECT_EQ(read_meter(s->by_protocol[0]).streams_open, 0u);
  EXPECT_EQ(read_meter(s->by_protocol[0]).streams_opened, 1u);
  EXPECT_EQ(devices.find("dev-1").total().streams_open, 0u);

  const auto doc = nlohmann::json::parse(sessions_json(dir.snapshot(10), dir.size()));
  ASSERT_EQ(doc["sessions"].size(), 1u);
  EXPECT_EQ(doc["total"], 1);
  const auto& j = doc["sessions"][0];
  EXPECT_EQ(j["credential"], "laptop");
  EXPECT_EQ(j["role"], "client");
  EXPECT_EQ(j["bytes_to_devices"], 10);
  EXPECT_EQ(j["bytes_from_devices"], 10);
  EXPECT_EQ(j["streams_opened"], 1);
  EXPECT_EQ(j["by_protocol"]["tcp"]["streams_opened"], 1);
  EXPECT_EQ(j["by_protocol"]["udp"]["streams_opened"], 0);
}

TEST(SessionDirectory, UdpDatagramsCountUnderUdp) {
  session_directory dir;
  auto s = dir.add("laptop", "127.0.0.1:5000", "");
  auto ch = metered_channel(std::make_unique<fake_channel>(), mux::protocol::udp, s, nullptr);
  const std::string d = "datagram";
  EXPECT_EQ(ch->try_send_datagram(std::as_bytes(std::span(d))), mux::datagram_status::sent);
  EXPECT_EQ(read_meter(s->by_protocol[1]).bytes_from_device, 8u);
  EXPECT_EQ(read_meter(s->by_protocol[1]).streams_open, 1u);
  EXPECT_EQ(read_meter(s->by_protocol[0]).streams_open, 0u);
}

// Streams on two threads count while a third reads snapshots and sessions come and go:
// the totals add up, and (under TSan) nothing races.
TEST(SessionDirectory, CountsFromManyThreadsWhileRead) {
  session_directory dir;
  device_activity devices;
  constexpr int rounds = 2000;
  auto worker = [&](std::string name) {
    auto s = dir.add(name, "127.0.0.1:1", "");
    for (int i = 0; i < rounds; ++i) {
      auto ch = metered_channel(std::make_unique<fake_channel>(), mux::protocol::tcp, s,
                                devices.meter("dev-1"));
      (void)ch->try_receive();  // 5 bytes toward the device
      if (i % 100 == 0) devices.dialed("dev-1", {true, errc::ok, "port 22 answered", {}});
    }
    return s;
  };
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      (void)sessions_json(dir.snapshot(100), dir.size());
      (void)devices.find("dev-1");
    }
  });
  std::shared_ptr<session_entry> a, b;
  std::thread t1([&] { a = worker("one"); });
  std::thread t2([&] { b = worker("two"); });
  t1.join();
  t2.join();
  done = true;
  reader.join();
  EXPECT_EQ(read_meter(a->by_protocol[0]).bytes_to_device, 5u * rounds);
  EXPECT_EQ(read_meter(b->by_protocol[0]).streams_opened, std::uint64_t{rounds});
  const auto d = devices.find("dev-1");
  EXPECT_EQ(d.total().bytes_to_device, 10u * rounds);
  EXPECT_EQ(d.total().streams_open, 0u);
  ASSERT_TRUE(d.last_dial);
  EXPECT_TRUE(d.last_dial->ok);
}

TEST(DeviceActivity, CatalogSaysWhetherEachDeviceIsReachable) {
  const registry reg(std::vector<device>{{"dev-1", "10.0.0.1"},
                                         {"dev-2", "10.0.0.2"},
                                         {"dev-3", "10.0.0.3"},
                                         {"dev-4", "10.0.0.4"},
                                         {"dev-77", "", true}});
  device_activity activity;
  const auto now = std::chrono::system_clock::now();
  activity.dialed("dev-1", {true, errc::ok, "port 22 answered", now});
  activity.dialed("dev-2", {false, errc::refused, "port 22: connection refused", now});
  activity.dialed("dev-4", {false, errc::timed_out, "port 22: timed out", now});
  agent_directory agents;
  auto all = parse_acl_rule("*");
  ASSERT_TRUE(all.ok());
  const auto doc =
      nlohmann::json::parse(catalog_json(reg, acl({all.value()}), &agents, &activity));
  const auto& list = doc["devices"];
  ASSERT_EQ(list.size(), 5u);
  EXPECT_EQ(list[0]["reachable"], true);
  EXPECT_EQ(list[0]["last_dial"]["ok"], true);
  // A refusal came from the device's address: it is there, the port is closed.
  EXPECT_EQ(list[1]["reachable"], true);
  EXPECT_EQ(list[1]["last_dial"]["ok"], false);
  EXPECT_EQ(list[1]["last_dial"]["error"], "refused");
  EXPECT_TRUE(list[2]["reachable"].is_null());  // never dialed
  EXPECT_FALSE(list[2].contains("last_dial"));
  EXPECT_EQ(list[3]["reachable"], false);  // nothing answered
  EXPECT_EQ(list[3]["last_dial"]["error"], "timed_out");
  EXPECT_EQ(list[4]["kind"], "agent");
  EXPECT_EQ(list[4]["reachable"], false);  // no agent online
  EXPECT_EQ(list[0]["streams_open"], 0);
  EXPECT_EQ(doc.dump().find("10.0.0"), std::string::npos);  // never an address
  // Without activity the catalog is as the tunnel's catalog stream carries it.
  const auto plain = nlohmann::json::parse(catalog_json(reg, acl({all.value()}), &agents));
  EXPECT_FALSE(plain["devices"][0].contains("reachable"));
}

}  // namespace
}  // namespace tether::server
