// The receive window's rules: credit goes back after a quarter of the window, the window
// doubles when that quarter came faster than half a round trip, stops at its cap, stays put
// without a round-trip measurement or on a link that is slower than the window, and goes
// back to its first size after a pause without taking back credit the peer holds.

#include "tether/mux/receive_window.hpp"

#include <gtest/gtest.h>

#include <cstdint>

namespace tether::mux {
namespace {

using namespace std::chrono_literals;
using clock = receive_window::clock;

constexpr std::uint32_t kib = 1024;
constexpr std::uint32_t initial = 256 * kib;
constexpr std::uint32_t cap = 2048 * kib;
constexpr auto rtt = 100ms;
constexpr auto idle = 1s;

// The peer sends what it may, the local side consumes it at once, `gap` apart per quarter
// window; returns the credit handed back.
std::uint64_t move_quarter(receive_window& w, clock::time_point& now, clock::duration gap) {
  const auto n = w.size() / 4;
  now += gap;
  EXPECT_TRUE(w.receive(n, now, idle));
  return w.consume(n, now, rtt);
}

// A window that grew to the cap, moving a quarter per millisecond since `now`.
receive_window grown_to_cap(clock::time_point& now) {
  receive_window w(initial, cap, now);
  for (int i = 0; i < 20; ++i) move_quarter(w, now, 1ms);
  return w;
}

TEST(receive_window, credit_goes_back_after_a_quarter_of_the_window) {
  auto now = clock::now();
  receive_window w(initial, cap, now);
  ASSERT_TRUE(w.receive(initial / 4 - 1, now, idle));
  EXPECT_EQ(w.consume(initial / 4 - 1, now + 1s, rtt), 0u);
  EXPECT_EQ(w.remaining(), initial - (initial / 4 - 1));
  ASSERT_TRUE(w.receive(1, now + 1s, idle));
  EXPECT_EQ(w.consume(1, now + 2s, rtt), initial / 4);  // slow: no growth
  EXPECT_EQ(w.size(), initial);
  EXPECT_EQ(w.remaining(), initial);
}

TEST(receive_window, more_than_granted_is_refused) {
  auto now = clock::now();
  receive_window w(initial, cap, now);
  EXPECT_TRUE(w.receive(initial, now, idle));
  EXPECT_FALSE(w.receive(1, now, idle));
}

TEST(receive_window, doubles_while_a_quarter_comes_faster_than_half_a_round_trip) {
  auto now = clock::now();
  receive_window w(initial, cap, now);
  // A quarter in 10 ms at 100 ms RTT: the consumer moves far more than the window allows.
  EXPECT_EQ(move_quarter(w, now, 10ms), initial / 4 + initial);  // the increase goes along
  EXPECT_EQ(w.size(), 2 * initial);
  EXPECT_EQ(w.remaining(), 2 * initial);  // the peer may now have the new window out
  move_quarter(w, now, 10ms);
  EXPECT_EQ(w.size(), 4 * initial);
}

TEST(receive_window, stops_at_the_cap) {
  auto now = clock::now();
  const auto w = grown_to_cap(now);
  EXPECT_EQ(w.size(), cap);
  EXPECT_FALSE(w.can_grow());
  EXPECT_EQ(w.remaining(), cap);
}

TEST(receive_window, a_cap_below_the_first_size_means_a_fixed_window) {
  auto now = clock::now();
  receive_window w(initial, initial / 2, now);
  EXPECT_EQ(w.cap(), initial);
  for (int i = 0; i < 8; ++i) move_quarter(w, now, 1ms);
  EXPECT_EQ(w.size(), initial);
}

TEST(receive_window, stays_without_a_round_trip_measurement) {
  auto now = clock::now();
  receive_window w(initial, cap, now);
  now += 1ms;
  ASSERT_TRUE(w.receive(initial / 4, now, idle));
  EXPECT_EQ(w.consume(initial / 4, now, clock::duration::zero()), initial / 4);
  EXPECT_EQ(w.size(), initial);
}

TEST(receive_window, settles_near_twice_the_bandwidth_delay_product_on_a_slower_link) {
  // 40 Mbit/s at 100 ms: BDP = 500 KB. Each quarter takes quarter / rate to arrive.
  constexpr double bytes_per_s = 40e6 / 8;
  auto now = clock::now();
  receive_window w(64 * kib, 64 * 1024 * kib, now);
  for (int i = 0; i < 200; ++i) {
    const auto n = w.size() / 4;
    move_quarter(w, now,
                 std::chrono::duration_cast<clock::duration>(
                     std::chrono::duration<double>(n / bytes_per_s)));
  }
  const double bdp = bytes_per_s * 0.1;
  EXPECT_GE(w.size(), 2 * bdp);
  EXPECT_LE(w.size(), 4 * bdp);
}

TEST(receive_window, goes_back_to_its_first_size_after_a_pause) {
  auto now = clock::now();
  auto w = grown_to_cap(now);
  ASSERT_EQ(w.size(), cap);

  // The peer holds credit for the whole grown window; after a pause it may still spend it.
  now += idle;
  ASSERT_TRUE(w.receive(cap, now, idle));
  EXPECT_EQ(w.size(), initial);
  EXPECT_EQ(w.withheld(), cap - initial);
  // What it spent beyond the first size is not credited back...
  EXPECT_EQ(w.consume(cap - initial, now, rtt), 0u);
  EXPECT_EQ(w.withheld(), 0u);
  // ... the rest is, as for a fresh window.
  const auto credit = w.consume(initial, now + 1s, rtt);
  EXPECT_EQ(credit, initial);
  EXPECT_EQ(w.remaining(), initial);
  EXPECT_FALSE(w.receive(initial + 1, now + 1s, idle));
}

TEST(receive_window, a_short_gap_keeps_the_window) {
  auto now = clock::now();
  receive_window w(initial, cap, now);
  for (int i = 0; i < 4; ++i) move_quarter(w, now, 1ms);
  const auto grown = w.size();
  ASSERT_GT(grown, initial);
  now += idle - 1ms;
  ASSERT_TRUE(w.receive(1, now, idle));
  EXPECT_EQ(w.size(), grown);
  EXPECT_EQ(w.withheld(), 0u);
}

TEST(receive_window, the_peer_never_holds_more_than_the_cap) {
  // However credit and growth interleave, granted minus received stays within the cap.
  auto now = clock::now();
  receive_window w(initial, cap, now);
  std::uint64_t held = 0;  // received, not yet consumed
  for (int i = 0; i < 1000; ++i) {
    now += std::chrono::microseconds((i * 7919) % 3000);
    const auto n = static_cast<std::size_t>(std::min<std::int64_t>(w.remaining(), 100 * kib));
    ASSERT_TRUE(w.receive(n, now, idle));
    held += n;
    const auto c = (i % 3 == 0) ? held : held / 2;
    held -= c;
    w.consume(c, now, rtt);
    ASSERT_LE(static_cast<std::uint64_t>(w.remaining()) + held, cap);
  }
}

}  // namespace
}  // namespace tether::mux
