#pragma once
// What one receiver (a stream, or a whole session) lets its peer send, and how that window
// follows the path: it grows while the local side consumes a window faster than the round
// trip could refill it, up to a cap, and goes back to its first size after a pause.
//
// A stream moves at most one window per round trip: 2 MiB at 100 ms is ~168 Mbit/s, however
// fast the link. The rule is the one QUIC implementations (Chromium's auto-tuning, quiche)
// and HPN-SSH use, in HTTP/2's BDP-probing terms: credit goes back after a quarter of the
// window has been consumed; when that quarter took less than half a round trip, the
// consumer moves more than window / (2 × RTT), i.e. the window is below twice the path's
// bandwidth-delay product, and it doubles (the increase goes out with the credit). On a
// link-limited path it settles between 2 and 4 × BDP; on a window-limited one it doubles
// a few times per round trip until the cap.
//
// Shrinking cannot take back credit the peer holds. After a pause (no DATA for idle_after)
// the next DATA finds the window back at its first size: the credit the peer holds beyond
// it is "withheld", i.e. bytes it covers are not credited back when consumed. So a burst
// after a pause is bounded by the grown window once, then by the first size until the rule
// grows it again.
//
// Pure: time comes in as arguments, so the rules are tested without a clock.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace tether::mux {

class receive_window {
 public:
  using clock = std::chrono::steady_clock;

  /// A window of `initial` bytes that may grow to `cap` (a cap below `initial` is taken
  /// as `initial`: no growth).
  receive_window(std::uint32_t initial, std::uint32_t cap, clock::time_point now) noexcept
      : initial_(initial),
        cap_(std::max(initial, cap)),
        size_(initial),
        remaining_(initial),
        last_update_(now),
        last_arrival_(now) {}

  /// The window as it stands: what the peer may have outstanding once credit is returned.
  std::uint32_t size() const noexcept { return size_; }
  std::uint32_t initial() const noexcept { return initial_; }
  std::uint32_t cap() const noexcept { return cap_; }
  /// What the peer may still send before more credit comes.
  std::int64_t remaining() const noexcept { return remaining_; }
  /// Credit the peer holds beyond a window that shrank, not to be returned.
  std::uint64_t withheld() const noexcept { return withheld_; }

  /// The peer sent `n` bytes. False if that is beyond what it was granted (a flow-control
  /// error). A window idle for `idle_after` goes back to its first size first.
  [[nodiscard]] bool receive(std::size_t n, clock::time_point now,
                             clock::duration idle_after) noexcept {
    if (size_ > initial_ && now - last_arrival_ >= idle_after) shrink();
    last_arrival_ = now;
    remaining_ -= static_cast<std::int64_t>(n);
    return remaining_ >= 0;
  }

  /// The local side is done with `n` bytes. Returns the credit to send now in a
  /// WINDOW_UPDATE (0: not yet, it gathers until a quarter of the window). `rtt` is the
  /// latest round-trip measurement, zero when there is none (then the window stays).
  std::uint32_t consume(std::size_t n, clock::time_point now, clock::duration rtt) noexcept {
    unacknowledged_ += n;
    const auto absorbed = std::min(withheld_, unacknowledged_);
    withheld_ -= absorbed;
    unacknowledged_ -= absorbed;
    if (unacknowledged_ < size_ / 4 || unacknowledged_ == 0) return 0;
    std::uint64_t increase = 0;
    if (rtt > clock::duration::zero() && size_ < cap_ && now - last_update_ < rtt / 2) {
      increase = std::min<std::uint64_t>(size_, cap_ - size_);
      size_ += static_cast<std::uint32_t>(increase);
    }
    const auto credit = unacknowledged_ + increase;
    remaining_ += static_cast<std::int64_t>(credit);
    unacknowledged_ = 0;
    last_update_ = now;
    return static_cast<std::uint32_t>(credit);
  }

  /// Credit consumed but not yet returned (for a stream that ends: nothing more to return).
  std::uint64_t unacknowledged() const noexcept { return unacknowledged_; }

  /// True when the window could still grow: worth measuring the round trip for.
  bool can_grow() const noexcept { return size_ < cap_; }

 private:
  void shrink() noexcept {
    withheld_ += size_ - initial_;
    size_ = initial_;
  }

  std::uint32_t initial_;
  std::uint32_t cap_;
  std::uint32_t size_;
  std::int64_t remaining_;
  std::uint64_t unacknowledged_ = 0;
  std::uint64_t withheld_ = 0;
  clock::time_point last_update_;   // when credit last went back (or the window opened)
  clock::time_point last_arrival_;  // when DATA last came
};

}  // namespace tether::mux
