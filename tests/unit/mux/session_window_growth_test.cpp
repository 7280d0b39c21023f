// Window growth in a session: stream windows grow with what the path carries once the
// round trip is known, and however many streams grow, what a peer can make the session hold
// stays within session_window_cap(). The peer here is raw: it answers PINGs a set time
// late (the round trip) and sends on every stream as much as its credit allows.

#include <gtest/gtest.h>

#include <asio/steady_timer.hpp>
#include <map>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::session_fixture;
using namespace std::chrono_literals;

using SessionWindowGrowth = session_fixture;

constexpr std::uint32_t stream_window = 64 * 1024;
constexpr auto round_trip = 40ms;

// A raw client that sends on its streams whatever credit allows and answers PINGs
// `round_trip` late; it records the credit it was given.
struct greedy_peer {
  std::shared_ptr<testing::frame_peer> raw;
  asio::any_io_executor ex;
  std::int64_t session_credit = 0;
  std::map<std::uint32_t, std::int64_t> stream_credit;  // open streams
  std::uint32_t largest_stream_update = 0;
  std::uint64_t sent = 0;
  std::vector<std::byte> payload = std::vector<std::byte>(wire::max_data_payload, std::byte{'x'});

  void on_frame(const testing::seen_frame& f) {
    if (auto r = f.as<wire::open_result>(); r && r->code == 0)
      stream_credit[r->stream_id] = r->window;
    if (auto u = f.as<wire::window_update>()) {
      if (u->stream_id == 0) {
        session_credit += u->increment;
      } else {
        stream_credit[u->stream_id] += u->increment;
        largest_stream_update = std::max(largest_stream_update, u->increment);
      }
    }
    if (auto p = f.as<wire::ping>(); p && !p->ack) {
      auto timer = std::make_shared<asio::steady_timer>(ex, round_trip);
      timer->async_wait([timer, peer = raw, opaque = p->opaque](asio::error_code) {
        peer->send(wire::ping{true, opaque});
      });
    }
    top_up();
  }

  void top_up() {
    for (auto& [id, credit] : stream_credit) {
      while (credit > 0 && session_credit > 0) {
        const auto n = static_cast<std::size_t>(
            std::min<std::int64_t>({credit, session_credit, std::int64_t(payload.size())}));
        raw->send(wire::data{id, false, std::span(payload).first(n)});
        credit -= static_cast<std::int64_t>(n);
        session_credit -= static_cast<std::int64_t>(n);
        sent += n;
      }
    }
  }

  // Starts answering the session, which has granted what its WELCOME says.
  void start() {
    session_credit = raw->frames().front().as<wire::welcome>()->session_window;
    raw->read_all([this](const testing::seen_frame& f) { on_frame(f); });
  }
};

// The local side of every stream: consumes what arrives at once, counting it, until
// `stalled` is set; from then on it holds what it has, its streams open and unread.
struct local_reader : std::enable_shared_from_this<local_reader> {
  bool stalled = false;
  std::uint64_t consumed = 0;
  std::vector<std::shared_ptr<channel>> held_open;

  session::open_handler accept_all(asio::any_io_executor ex) {
    // Weak: the session keeps its handler, and the channels keep the session.
    return [weak = weak_from_this(), ex](incoming_stream in) {
      auto self = weak.lock();
      if (!self) return in.refuse(errc::internal, "the test is over");
      std::shared_ptr<channel> ch = in.accept();
      self->held_open.push_back(ch);
      asio::co_spawn(ex, read(self, ch), asio::detached);
    };
  }

  static asio::awaitable<void> read(std::shared_ptr<local_reader> self,
                                    std::shared_ptr<channel> ch) {
    for (;;) {
      auto [ec, bytes] = co_await ch->receive();
      if (ec || bytes.empty() || self->stalled) co_return;
      self->consumed += bytes.size();
      ch->consumed(bytes.size());
    }
  }
};

TEST_F(SessionWindowGrowth, ManyGrowingStreamsStayWithinTheSessionCap) {
  session_settings settings;
  settings.stream_window = stream_window;
  settings.session_window = 128 * 1024;
  settings.max_stream_window = 512 * 1024;
  const auto session_cap = session_window_cap(settings);
  ASSERT_EQ(session_cap, 1024 * 1024);  // twice the stream cap: 32 streams could grow to 16 MiB

  auto reader = std::make_shared<local_reader>();
  auto served = serve(settings, reader->accept_all(ex()));
  auto& [session, raw, to_session, to_raw] = served;
  auto& s = session;  // a plain reference: clang 14 cannot capture structured bindings
  greedy_peer peer{raw, ex()};
  peer.start();
  constexpr std::uint32_t streams = 32;
  for (std::uint32_t i = 0; i < streams; ++i)
    raw->send(wire::open{2 * i + 1, 0, 22, 1u << 20, "dev-1"});

  // Moving fast against a 40 ms round trip, the windows grow: a stream's credit comes back
  // with an increase in it, which a fixed window never gives (at most one window).
  ASSERT_TRUE(run_until([&] { return peer.largest_stream_update > 2 * stream_window; }))
      << "largest stream WINDOW_UPDATE " << peer.largest_stream_update;
  EXPECT_LE(peer.largest_stream_update, settings.max_stream_window);

  // Now the local side stops reading: the peer spends all the credit it holds.
  reader->stalled = true;
  ASSERT_TRUE(run_until([&] { return s->counters().bytes_in == peer.sent; }));
  ASSERT_TRUE(settle());
  ASSERT_EQ(s->counters().bytes_in, peer.sent);
  ASSERT_FALSE(s->closed()) << s->end_reason();
  const auto held = s->counters().bytes_in - reader->consumed;
  EXPECT_LE(held, session_cap);
  // The streams would have taken more: it is the session's window that held them back.
  std::int64_t unspent_stream_credit = 0;
  for (const auto& [id, credit] : peer.stream_credit) unspent_stream_credit += credit;
  EXPECT_GT(held + static_cast<std::uint64_t>(unspent_stream_credit), session_cap);
}

TEST_F(SessionWindowGrowth, WindowsStayFixedWhenTheCapIsTheFirstSize) {
  session_settings settings;
  settings.stream_window = stream_window;
  settings.session_window = 128 * 1024;
  settings.max_stream_window = stream_window;
  EXPECT_EQ(session_window_cap(settings), 128 * 1024);
  auto reader = std::make_shared<local_reader>();
  auto [s, raw, to_session, to_raw] = serve(settings, reader->accept_all(ex()));
  greedy_peer peer{raw, ex()};
  peer.start();
  raw->send(wire::open{1, 0, 22, 1u << 20, "dev-1"});
  ASSERT_TRUE(run_until([&] { return peer.sent >= 16u << 20; }));
  EXPECT_LE(peer.largest_stream_update, stream_window);
  // Nothing to grow, so nothing to measure: no PING went out.
  EXPECT_TRUE(raw->all<wire::ping>().empty());
}

}  // namespace
}  // namespace tether::mux
