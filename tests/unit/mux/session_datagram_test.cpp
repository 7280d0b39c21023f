// Datagram streams (UDP flows) over real sessions: each datagram travels whole and alone, in
// order; one that cannot go now is dropped and said so, never waited for; the receiver
// drops rather than hoards; a peer that breaks the datagram rules loses its session; and a
// flood of datagrams does not stall a TCP stream of the same session.

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <map>

#include "session_fixture.hpp"

namespace tether::mux {
namespace {

using testing::encoded;
using testing::nothing;
using testing::session_fixture;
using namespace std::chrono_literals;

using datagram = std::vector<std::byte>;

// `n` bytes that differ from one datagram to the next (by `seed`) and along the datagram.
datagram pattern(std::size_t n, std::uint32_t seed) {
  datagram d(n);
  for (std::size_t i = 0; i < n; ++i)
    d[i] = std::byte(static_cast<std::uint8_t>(i * 31 + seed * 7));
  return d;
}

const target udp_target{"dev-1", 53, protocol::udp};
const target tcp_target{"dev-1", 22, protocol::tcp};

// (Coroutines are free functions: a lambda coroutine called in place would outlive its
// captures.)
asio::awaitable<std::pair<asio::error_code, datagram>> receive_one(channel& ch) {
  auto [ec, d] = co_await ch.receive();
  datagram copy(d.begin(), d.end());
  ch.consumed(d.size());
  co_return std::pair{ec, copy};
}

// 64 datagrams per turn of the event loop until `stop`; counts what became of each.
asio::awaitable<void> flood_until(channel& ch, const bool& stop,
                                  std::map<datagram_status, std::uint64_t>& seen) {
  const auto d = pattern(1400, 0);
  while (!stop) {
    for (int i = 0; i < 64; ++i) ++seen[ch.try_send_datagram(d)];
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  }
}

asio::awaitable<asio::error_code> send_then_eof(channel& ch, std::span<const std::byte> bytes) {
  co_await testing::send_all(ch, bytes);
  co_return co_await ch.send_eof();
}

class SessionDatagram : public session_fixture {
 protected:
  // A client and a server session over one pipe holding `capacity` bytes per direction
  // (0: no limit); the server accepts every stream into `accepted`.
  session_pair connect(session_settings settings, std::size_t capacity = 0) {
    auto pipe = testing::make_bounded_pipe(ex(), capacity);
    session_pair out{track(session::make(std::move(pipe.a), settings)),
                     track(session::make(std::move(pipe.b), settings))};
    auto served = start(out.server->start_server(
        [](wire::role, std::string_view, std::string&) { return errc::ok; },
        [this](incoming_stream in) { accept(std::move(in)); }));
    auto dialed = start(out.client->start_client("good", wire::role::client, {}, message_));
    EXPECT_TRUE(run_until([&] { return served->has_value() && dialed->has_value(); }));
    return out;
  }

  // Opens a stream from the client; returns both ends.
  std::pair<std::unique_ptr<channel>, std::unique_ptr<channel>> open(session& client, target t) {
    const auto before = accepted.size();
    auto opened = start(client.open(t));
    EXPECT_TRUE(run_until([&] { return opened->has_value() && accepted.size() > before; }));
    if (!opened->has_value() || accepted.size() == before) return {};
    EXPECT_FALSE(opened->value().first) << opened->value().first.message();
    return {std::move(opened->value().second), std::move(accepted.back())};
  }

  // Takes datagrams from `ch` (consuming each) until `count` have come or `limit` passed.
  std::vector<datagram> receive(channel& ch, std::size_t count,
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

  virtual void accept(incoming_stream in) { accepted.push_back(in.accept()); }

  std::vector<std::unique_ptr<channel>> accepted;

 private:
  std::string message_;
};

// ---- whole datagrams ---------------------------------------------------------------------

TEST_F(SessionDatagram, WholeDatagramsPassBothWaysInOrderNeverMerged) {
  auto [client, server] = connect({});
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);

  const std::vector<std::size_t> sizes{0, 1, 1400, wire::max_datagram, 0, 1};
  // All of them before the other side reads: they wait there together and still come out
  // one by one.
  for (std::uint32_t i = 0; i < sizes.size(); ++i)
    ASSERT_EQ(c->try_send_datagram(pattern(sizes[i], i)), datagram_status::sent) << i;
  ASSERT_TRUE(settle());
  auto got = receive(*s, sizes.size());
  ASSERT_EQ(got.size(), sizes.size());
  for (std::uint32_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(got[i], pattern(sizes[i], i)) << i;

  for (std::uint32_t i = 0; i < sizes.size(); ++i)
    ASSERT_EQ(s->try_send_datagram(pattern(sizes[i], 100 + i)), datagram_status::sent) << i;
  ASSERT_TRUE(settle());
  got = receive(*c, sizes.size());
  ASSERT_EQ(got.size(), sizes.size());
  for (std::uint32_t i = 0; i < sizes.size(); ++i)
    EXPECT_EQ(got[i], pattern(sizes[i], 100 + i)) << i;

  // Nothing more: an empty datagram is a datagram, not an end of stream.
  EXPECT_EQ(c->try_receive().first, asio::error::would_block);
  EXPECT_EQ(s->try_receive().first, asio::error::would_block);
}

TEST_F(SessionDatagram, ReceiveAwaitsOneWholeDatagramAtATime) {
  auto [client, server] = connect({});
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);
  ASSERT_EQ(c->try_send_datagram(pattern(0, 1)), datagram_status::sent);
  ASSERT_EQ(c->try_send_datagram(pattern(3000, 2)), datagram_status::sent);

  auto first = start(receive_one(*s));
  ASSERT_TRUE(run_until([&] { return first->has_value(); }));
  EXPECT_FALSE(first->value().first);
  EXPECT_TRUE(first->value().second.empty());
  auto rest = receive(*s, 1);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0], pattern(3000, 2));
}

TEST_F(SessionDatagram, TooLargeIsRefusedAtTheSender) {
  auto [client, server] = connect({});
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);
  EXPECT_EQ(c->try_send_datagram(pattern(wire::max_datagram + 1, 0)), datagram_status::too_large);
  EXPECT_EQ(c->try_send_datagram(pattern(10, 0)), datagram_status::sent);
}

TEST_F(SessionDatagram, ByteStreamCallsAreUnsupportedOnAFlow) {
  auto [client, server] = connect({});
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);
  const auto unsupported = make_error_code(errc::unsupported);
  for (channel* ch : {c.get(), s.get()}) {
    auto credit = start(ch->wait_send_credit());
    auto sent = start(ch->send(testing::as_bytes("hello")));
    auto eof = start(ch->send_eof());
    ASSERT_TRUE(
        run_until([&] { return credit->has_value() && sent->has_value() && eof->has_value(); }));
    EXPECT_EQ(credit->value().first, unsupported);
    EXPECT_EQ(sent->value(), unsupported);
    EXPECT_EQ(eof->value(), unsupported);
  }
  // The flow is still up.
  EXPECT_EQ(c->try_send_datagram(pattern(5, 0)), datagram_status::sent);
  EXPECT_EQ(receive(*s, 1).size(), 1u);
}

TEST_F(SessionDatagram, TryReceiveOnAFailedFlowGivesItsError) {
  auto [client, server] = connect({});
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);
  c->reset(errc::timed_out);
  ASSERT_TRUE(run_until([&, &s = s] { return s->error().operator bool(); }));
  EXPECT_EQ(s->try_receive().first, make_error_code(errc::timed_out));
  EXPECT_EQ(s->try_send_datagram(pattern(5, 0)), datagram_status::failed);
  EXPECT_EQ(c->try_send_datagram(pattern(5, 0)), datagram_status::failed);
}

// ---- credit ------------------------------------------------------------------------------

TEST_F(SessionDatagram, NoCreditOnceTheStreamWindowIsUsedThenSentAgainAfterTheReaderConsumes) {
  session_settings settings;
  settings.stream_window = 64 * 1024;
  auto [client, server] = connect(settings);
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);

  const std::size_t size = 1400;
  const std::size_t fit = settings.stream_window / size;  // 46
  for (std::uint32_t i = 0; i < fit; ++i)
    ASSERT_EQ(c->try_send_datagram(pattern(size, i)), datagram_status::sent) << i;
  EXPECT_EQ(c->try_send_datagram(pattern(size, 999)), datagram_status::no_credit);
  // What is left of the window still takes a datagram that fits in it.
  const auto left = settings.stream_window - fit * size;
  EXPECT_EQ(c->try_send_datagram(pattern(left, 998)), datagram_status::sent);
  EXPECT_EQ(c->try_send_datagram(pattern(1, 997)), datagram_status::no_credit);
  EXPECT_EQ(c->try_send_datagram(pattern(0, 996)), datagram_status::sent)
      << "an empty one costs nothing";

  // Nothing changes while the reader holds them.
  ASSERT_TRUE(settle());
  EXPECT_EQ(c->try_send_datagram(pattern(size, 999)), datagram_status::no_credit);

  const auto got = receive(*s, fit + 2);
  ASSERT_EQ(got.size(), fit + 2);
  ASSERT_TRUE(settle());
  EXPECT_EQ(c->try_send_datagram(pattern(size, 1000)), datagram_status::sent);
  const auto after = receive(*s, 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0], pattern(size, 1000));
}

TEST_F(SessionDatagram, NoCreditWhenTheSessionWindowIsUsedByAnotherFlow) {
  session_settings settings;
  settings.stream_window = 64 * 1024;
  settings.session_window = 96 * 1024;
  auto [client, server] = connect(settings);
  auto [c1, s1] = open(*client, udp_target);
  auto [c2, s2] = open(*client, udp_target);
  ASSERT_TRUE(c1 && s1 && c2 && s2);

  const auto big = pattern(wire::max_datagram, 0);  // nearly a whole stream window
  ASSERT_EQ(c1->try_send_datagram(big), datagram_status::sent);
  ASSERT_EQ(c2->try_send_datagram(pattern(20000, 1)), datagram_status::sent);
  // Flow 2 has 44 KiB of its window left, the session 11 KiB.
  EXPECT_EQ(c2->try_send_datagram(pattern(20000, 2)), datagram_status::no_credit);
  EXPECT_EQ(c2->try_send_datagram(pattern(10000, 3)), datagram_status::sent);

  // Flow 1's reader consumes: the session's credit comes back for flow 2.
  ASSERT_EQ(receive(*s1, 1).size(), 1u);
  ASSERT_TRUE(settle());
  EXPECT_EQ(c2->try_send_datagram(pattern(20000, 2)), datagram_status::sent);
  const auto got = receive(*s2, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2], pattern(20000, 2));
}

// ---- a peer that does not read -----------------------------------------------------------

TEST_F(SessionDatagram, BackloggedWhenThePeerDoesNotReadThenSentOnceItDoes) {
  session_settings settings;
  settings.max_queued_bytes = 64 * 1024;
  constexpr std::size_t capacity = 64 * 1024;
  // A raw server that grants all the credit there is and then reads nothing.
  auto [s, raw, to_session, to_raw] =
      dial(settings, wire::welcome{wire::protocol_version, wire::max_window, wire::max_window, 0},
           capacity);
  auto opened = start(s->open(udp_target));
  raw->read_next();
  ASSERT_TRUE(run_until([&, &raw = raw] { return raw->frames().size() == 2; }));
  const auto open = raw->frames()[1].as<wire::open>();
  ASSERT_TRUE(open);
  EXPECT_EQ(open->proto, static_cast<std::uint8_t>(protocol::udp));
  raw->send(wire::open_result{open->stream_id, 0, wire::max_window, ""});
  ASSERT_TRUE(run_until([&] { return opened->has_value(); }));
  auto& ch = opened->value().second;
  ASSERT_TRUE(ch);

  std::map<datagram_status, std::size_t> seen;
  const auto d = pattern(1400, 0);
  for (int round = 0; round < 100 && seen[datagram_status::backlogged] == 0; ++round) {
    for (int i = 0; i < 16; ++i) ++seen[ch->try_send_datagram(d)];
    ASSERT_TRUE(settle()) << "a datagram sender waited";
  }
  EXPECT_GT(seen[datagram_status::backlogged], 0u) << "never backlogged";
  EXPECT_EQ(seen[datagram_status::no_credit], 0u);
  EXPECT_EQ(seen[datagram_status::failed], 0u);
  // Bounded: the pipe is full, and the session holds at most its budget.
  EXPECT_EQ(to_raw->bytes.size(), capacity);
  EXPECT_LE(s->queued_bytes(), settings.max_queued_bytes);
  EXPECT_FALSE(s->closed());

  // The peer reads again: the queue drains and datagrams go again.
  raw->read_all();
  ASSERT_TRUE(settle());
  EXPECT_EQ(ch->try_send_datagram(d), datagram_status::sent);
  ASSERT_TRUE(settle());
  EXPECT_EQ(raw->all<wire::datagram>().size(), seen[datagram_status::sent] + 1);
}

TEST_F(SessionDatagram, TheReceiverDropsPast256UnconsumedAndReturnsTheirCredit) {
  session_settings settings;
  settings.stream_window = 64 * 1024;
  settings.session_window = 128 * 1024;
  auto [client, server] = connect(settings);
  auto [c, s] = open(*client, udp_target);
  ASSERT_TRUE(c && s);

  // 2,000 datagrams of 100 bytes: three times the stream window, to a reader that reads
  // nothing. Without the credit of the dropped ones the sender would stop at the window.
  const std::uint32_t total = 2000;
  std::uint32_t sent = 0;
  for (int stalls = 0; sent < total && stalls < 1000;) {
    const auto status = c->try_send_datagram(pattern(100, sent));
    if (status == datagram_status::sent) {
      ++sent;
      continue;
    }
    ASSERT_EQ(status, datagram_status::no_credit);
    ++stalls;
    ASSERT_TRUE(settle());
  }
  ASSERT_EQ(sent, total) << "the sender ran out of credit";
  ASSERT_TRUE(settle());
  EXPECT_EQ(server->counters().datagrams_dropped, total - max_inbound_datagrams);

  // The first 256 wait for the reader, whole and in order.
  const auto got = receive(*s, max_inbound_datagrams);
  ASSERT_EQ(got.size(), max_inbound_datagrams);
  for (std::uint32_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], pattern(100, i)) << i;
  EXPECT_EQ(s->try_receive().first, asio::error::would_block);
  // Room again: the next one is kept.
  ASSERT_EQ(c->try_send_datagram(pattern(100, 5000)), datagram_status::sent);
  const auto next = receive(*s, 1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0], pattern(100, 5000));
}

// ---- a peer that breaks the rules --------------------------------------------------------

wire::open open_flow(std::uint32_t id, protocol p = protocol::udp,
                     std::uint32_t window = 2u << 20) {
  return wire::open{id, static_cast<std::uint8_t>(p), 53, window, "dev-1"};
}

std::span<const std::byte> bytes_of(std::size_t n) {
  static const datagram bytes(wire::max_datagram, std::byte{'u'});
  return std::span(bytes).first(n);
}

struct datagram_violation {
  const char* name;
  std::vector<std::byte> (*setup)();  // legal, after stream 1 (udp) was opened and accepted
  std::vector<std::byte> (*violation)();
  errc code;
  const char* words;  // in the GOAWAY's message
  std::uint32_t stream_window = 2u << 20;
  std::uint32_t session_window = 16u << 20;
};

const datagram_violation violations[] = {
    {"DataOnAUdpFlow", nothing,
     [] {
       return encoded({wire::data{1, false, bytes_of(10)}});
     },
     errc::protocol_error, "DATA on stream 1, which is a UDP flow"},
    {"DataWithFinOnAUdpFlow", nothing,
     [] {
       return encoded({wire::data{1, true, {}}});
     },
     errc::protocol_error, "DATA on stream 1, which is a UDP flow"},
    {"DatagramOnATcpStream", [] { return encoded({open_flow(3, protocol::tcp)}); },
     [] {
       return encoded({wire::datagram{3, bytes_of(10)}});
     },
     errc::protocol_error, "DATAGRAM on stream 3, which is a TCP stream"},
    {"DatagramOnAStreamNeverOpened", nothing,
     [] {
       return encoded({wire::datagram{7, bytes_of(10)}});
     },
     errc::protocol_error, "DATAGRAM on stream 7, which was never opened"},
    {"DatagramBeforeTheFlowWasAccepted",
     [] {
       auto o = open_flow(3);
       o.device = "pending";
       return encoded({o});
     },
     [] {
       return encoded({wire::datagram{3, bytes_of(10)}});
     },
     errc::protocol_error, "DATAGRAM on stream 3 before it was accepted"},
    // A window used up exactly is fine; one byte more ends the session.
    {"DatagramBeyondTheStreamWindow",
     [] {
       return encoded({wire::datagram{1, bytes_of(wire::max_datagram)},
                       wire::datagram{1, bytes_of(64 * 1024 - wire::max_datagram)}});
     },
     [] {
       return encoded({wire::datagram{1, bytes_of(1)}});
     },
     errc::flow_control_error, "peer exceeded a stream window", 64 * 1024},
    {"DatagramBeyondTheSessionWindow",
     [] {
       return encoded({open_flow(3), wire::datagram{1, bytes_of(wire::max_datagram)},
                       wire::datagram{3, bytes_of(96 * 1024 - wire::max_datagram)}});
     },
     [] {
       return encoded({wire::datagram{3, bytes_of(1)}});
     },
     errc::flow_control_error, "peer exceeded the session window", 64 * 1024, 96 * 1024},
};

class SessionDatagramViolation : public session_fixture,
                                 public ::testing::WithParamInterface<datagram_violation> {};

TEST_P(SessionDatagramViolation, EndsTheSessionWithAGoaway) {
  const auto& c = GetParam();
  session_settings settings;
  settings.stream_window = c.stream_window;
  settings.session_window = c.session_window;
  std::vector<std::unique_ptr<channel>> held;  // accepted, never read
  std::vector<incoming_stream> pending;        // never answered
  auto on_open = [&](incoming_stream in) {
    if (in.target().device == "pending") return pending.push_back(std::move(in));
    held.push_back(in.accept());
  };
  auto [s, raw, to_session, to_raw] = serve(settings, on_open);
  auto ended = start(s->wait_ended());
  raw->read_all();

  raw->send(open_flow(1));
  raw->send_bytes(c.setup());
  ASSERT_TRUE(settle());
  ASSERT_FALSE(s->closed()) << "the setup alone ended the session";
  ASSERT_FALSE(held.empty());

  raw->send_bytes(c.violation());
  ASSERT_TRUE(run_until([&, &raw = raw] { return raw->ended() && ended->has_value(); }));
  EXPECT_EQ(ended->value(), make_error_code(c.code)) << ended->value().message();
  ASSERT_FALSE(raw->frames().empty());
  const auto goaway = raw->frames().back().as<wire::goaway>();
  ASSERT_TRUE(goaway) << "the last frame is not a GOAWAY";
  EXPECT_EQ(goaway->code, static_cast<std::uint8_t>(c.code));
  EXPECT_NE(goaway->message.find(c.words), std::string_view::npos)
      << "GOAWAY said '" << goaway->message << "'";
  for (auto& ch : held) {
    EXPECT_EQ(ch->error(), make_error_code(errc::session_lost));
    EXPECT_EQ(ch->try_send_datagram(bytes_of(1)), datagram_status::failed);
  }
}

INSTANTIATE_TEST_SUITE_P(Each, SessionDatagramViolation, ::testing::ValuesIn(violations),
                         [](const auto& param) { return std::string(param.param.name); });

// ---- a flood beside a bulk transfer ------------------------------------------------------

class SessionDatagramFlood : public SessionDatagram {
 protected:
  // TCP streams are read to their end into `tcp_received`; UDP flows are never read.
  void accept(incoming_stream in) override {
    auto ch = in.accept();
    if (in.target().proto == protocol::udp) return accepted.push_back(std::move(ch));
    asio::co_spawn(
        ex(),
        [this, ch = std::move(ch)]() -> asio::awaitable<void> {
          auto [ec, text] = co_await testing::receive_all(*ch);
          tcp_error = ec;
          tcp_received = std::move(text);
          tcp_done = true;
        },
        asio::detached);
  }

  std::string tcp_received;
  asio::error_code tcp_error;
  bool tcp_done = false;
};

TEST_F(SessionDatagramFlood, ATcpTransferCompletesWhileAnotherFlowFloods) {
  session_settings settings;
  settings.max_queued_bytes = 1u << 20;
  // Pipes that hold what a socket would, so the session's output really backs up.
  auto [client, server] = connect(settings, 256 * 1024);
  auto [u, u_server] = open(*client, udp_target);
  auto tcp = start(client->open(tcp_target));
  ASSERT_TRUE(run_until([&] { return tcp->has_value(); }));
  auto& t = tcp->value().second;
  ASSERT_TRUE(u && t);

  // The flood: 64 datagrams per turn of the event loop for as long as the transfer runs.
  bool stop = false;
  std::map<datagram_status, std::uint64_t> flood;
  auto flooding = start(flood_until(*u, stop, flood));

  std::string bulk(8u << 20, '\0');
  for (std::size_t i = 0; i < bulk.size(); ++i) bulk[i] = static_cast<char>((i * 131) >> 7);
  auto sent = start(send_then_eof(*t, testing::as_bytes(bulk)));
  const auto began = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_until([&] { return tcp_done; }, 60s)) << "the TCP stream stalled";
  const auto took = std::chrono::steady_clock::now() - began;
  stop = true;
  ASSERT_TRUE(run_until([&] { return *flooding; }));
  ASSERT_TRUE(sent->has_value());
  EXPECT_FALSE(sent->value());
  EXPECT_FALSE(tcp_error) << tcp_error.message();
  EXPECT_EQ(tcp_received.size(), bulk.size());
  EXPECT_TRUE(tcp_received == bulk) << "the TCP bytes differ";

  // The flood went on throughout, and paid with drops: at the sender (no credit, backlog)
  // or at the receiver, which never reads.
  EXPECT_GT(flood[datagram_status::sent], 1000u);
  EXPECT_EQ(flood[datagram_status::failed], 0u);
  const auto dropped = flood[datagram_status::no_credit] + flood[datagram_status::backlogged] +
                       server->counters().datagrams_dropped;
  EXPECT_GT(dropped, 0u);
  RecordProperty(
      "tcp_ms",
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

}  // namespace
}  // namespace tether::mux
