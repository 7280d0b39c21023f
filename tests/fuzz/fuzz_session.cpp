// Fuzzes a whole server-side session: a valid HELLO, then whatever the fuzzer's bytes make of
// the rest, over the in-memory pipe of the unit tests.
//
// The first byte chooses the settings: small windows on either side, a limit of 4 streams,
// the client or agent role, a peer that stalls (reads the session's output only when told,
// through a pipe that holds 16 KiB) and a small bound on queued output. The rest is a
// sequence of records; the first byte of each picks what it is (tests/fuzz/make_seeds.py
// writes them):
//   - a frame of each type, its fields filled from the bytes after it (stream ids mostly
//     from a small set, so frames meet the streams they belong to), or raw bytes verbatim;
//   - a delivery point: what was written so far reaches the session, which runs until idle;
//   - a read by a stalling peer of some of the session's output;
//   - an action of the local side: open a stream toward the peer, GOAWAY, reset, half-close,
//     send on, drain or drop a held stream, close the session.
// The open handler decides by port: echo the stream back, hold it for the actions above,
// read it through try_receive()/when_receivable(), reset it, refuse it, or drop it
// unanswered.
//
// Everything runs on one thread with io_context::poll() and no timer ever expires, so a run
// is deterministic. At the end the peer goes away; the session must end, every coroutine of
// the handler must finish, nothing may keep the session alive, and every byte the session
// wrote must decode as valid frames, with no DATA after the session's own FIN or RESET on
// that stream. FUZZ_SESSION_TRACE=1 prints the frames both ways and the local actions.

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <span>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "memory_pipe.hpp"
#include "tether/mux/session.hpp"
#include "tether/wire/codec.hpp"

namespace {

using namespace tether;
using mux::testing::memory_stream;
using mux::testing::pipe_half_state;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_session: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

// Reads fields from the fuzzer's bytes; past the end every field is 0.
class input {
 public:
  input(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  bool empty() const { return n_ == 0; }
  std::uint8_t u8() {
    if (!n_) return 0;
    --n_;
    return *p_++;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() << 8 | u8()); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16()) << 16 | u16(); }
  std::uint64_t u64() { return static_cast<std::uint64_t>(u32()) << 32 | u32(); }
  std::span<const std::byte> bytes(std::size_t n) {
    n = std::min(n, n_);
    std::span<const std::byte> out(reinterpret_cast<const std::byte*>(p_), n);
    p_ += n;
    n_ -= n;
    return out;
  }
  std::string_view text(std::size_t n) {
    auto b = bytes(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

constexpr std::string_view devices[] = {
    "dev-1", "dev-2",   "nowhere",
    "a",     "x.y_z-0", "0123456789012345678901234567890123456789012345678901234567890123"};

// Stream ids: mostly from a few odd ones (the peer's) and even ones (ours), sometimes any.
std::uint32_t stream_id(input& in) {
  const auto b = in.u8();
  if (b < 200) return 1u + (b % 20);  // 1..20: both parities, reused and fresh
  if (b < 250) return 0;              // session-level (WINDOW_UPDATE) or invalid
  return in.u32();
}

std::uint32_t window(input& in) {
  switch (in.u8() % 8) {
    case 0:
      return 1;
    case 1:
      return 100;
    case 2:
      return 16384;
    case 3:
      return 65536;
    case 4:
      return 2u << 20;
    case 5:
      return wire::max_window;
    case 6:
      return 0;  // invalid: the decoder refuses it
    default:
      return in.u32();
  }
}

std::string_view message(input& in) {
  return in.text(in.u8() % 64);
}

// Bytes for DATA payloads when the input should not pay for them.
const std::vector<std::byte>& pattern() {
  static const std::vector<std::byte> p = [] {
    std::vector<std::byte> v(wire::max_data_payload);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::byte(i * 131 + (i >> 8));
    return v;
  }();
  return p;
}

// The state of one run, shared by the handlers and the coroutines they start.
struct harness {
  asio::io_context io;
  std::shared_ptr<pipe_half_state> to_server = std::make_shared<pipe_half_state>();
  std::shared_ptr<pipe_half_state> to_client = std::make_shared<pipe_half_state>();
  std::shared_ptr<mux::session> session;
  std::vector<std::byte> pending;     // encoded, not yet delivered
  std::vector<std::byte> output;      // written by the session, not yet decoded
  std::set<std::uint32_t> ended_out;  // streams the session sent FIN or RESET on
  // Streams kept for local actions; `busy` while a send or send_eof runs on one (a channel
  // takes one at a time). Entries are never erased before the end, so indexes stay valid.
  struct held_stream {
    std::unique_ptr<mux::channel> ch;
    bool busy = false;
  };
  std::vector<held_stream> held;
  int live_tasks = 0;        // handler coroutines and callbacks not done
  bool peer_stalls = false;  // the peer reads the session's output only when told to
  bool started = false;      // start_server() completed
  asio::error_code start_result;
};

// Runs every ready handler, until there are none; bounded, so a livelock is reported
// instead of spinning forever.
void run_until_idle(harness& h) {
  for (int i = 0; i < 100000; ++i) {
    if (h.io.poll() == 0) {
      h.io.restart();
      return;
    }
    h.io.restart();
  }
  fail("the session never goes idle");
}

// With FUZZ_SESSION_TRACE set, the frames the session writes are printed: to see what a
// seed or a crashing input makes the session do.
bool trace = false;

void print_frame(const char* dir, const wire::frame& f) {
  std::visit(
      [dir](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, wire::hello>)
          std::fprintf(stderr, "%s HELLO role %u\n", dir, static_cast<unsigned>(x.role));
        else if constexpr (std::is_same_v<T, wire::welcome>)
          std::fprintf(stderr, "%s WELCOME\n", dir);
        else if constexpr (std::is_same_v<T, wire::open>)
          std::fprintf(stderr, "%s OPEN %u port %u\n", dir, x.stream_id, x.port);
        else if constexpr (std::is_same_v<T, wire::open_result>)
          std::fprintf(stderr, "%s OPEN_RESULT %u code %u\n", dir, x.stream_id, x.code);
        else if constexpr (std::is_same_v<T, wire::data>)
          std::fprintf(stderr, "%s DATA %u %zu bytes%s\n", dir, x.stream_id, x.payload.size(),
                       x.fin ? " FIN" : "");
        else if constexpr (std::is_same_v<T, wire::datagram>)
          std::fprintf(stderr, "%s DATAGRAM %u %zu bytes\n", dir, x.stream_id, x.payload.size());
        else if constexpr (std::is_same_v<T, wire::window_update>)
          std::fprintf(stderr, "%s WINDOW_UPDATE %u +%u\n", dir, x.stream_id, x.increment);
        else if constexpr (std::is_same_v<T, wire::reset>)
          std::fprintf(stderr, "%s RESET %u code %u\n", dir, x.stream_id, x.code);
        else if constexpr (std::is_same_v<T, wire::ping>)
          std::fprintf(stderr, "%s PING%s %llu\n", dir, x.ack ? " ACK" : "",
                       static_cast<unsigned long long>(x.opaque));
        else if constexpr (std::is_same_v<T, wire::goaway>)
          std::fprintf(stderr, "%s GOAWAY last %u code %u: %.*s\n", dir, x.last_stream_id, x.code,
                       static_cast<int>(x.message.size()), x.message.data());
        else
          std::fprintf(stderr, "%s frame of type %zu\n", dir, wire::frame(x).index());
      },
      f);
}

// Everything the session wrote must be a sequence of valid frames.
// What the session sends must keep the protocol whatever its peer or its local side does: no
// DATA on a stream after the session's own FIN or RESET on it.
void check_sent(harness& h, const wire::frame& f) {
  if (const auto* d = std::get_if<wire::data>(&f)) {
    if (h.ended_out.contains(d->stream_id)) {
      std::fprintf(stderr,
                   "fuzz_session: the session sent DATA on stream %u after its FIN or RESET\n",
                   d->stream_id);
      std::abort();
    }
    if (d->fin) h.ended_out.insert(d->stream_id);
  } else if (const auto* r = std::get_if<wire::reset>(&f)) {
    h.ended_out.insert(r->stream_id);
  }
}

// Takes up to `limit` bytes of what the session wrote, as a peer reading its socket would.
void read_output(harness& h, std::size_t limit) {
  auto& q = h.to_client->bytes;
  const auto n = static_cast<std::ptrdiff_t>(std::min(limit, q.size()));
  h.output.insert(h.output.end(), q.begin(), q.begin() + n);
  q.erase(q.begin(), q.begin() + n);
  if (n > 0) h.to_client->space.notify();
  std::span<const std::byte> rest(h.output);
  for (;;) {
    const auto r = wire::decode(rest);
    if (r.status == wire::decode_status::need_more) break;
    if (r.status == wire::decode_status::error) {
      std::fprintf(stderr, "fuzz_session: the session wrote an invalid frame: %s\n", r.reason);
      std::abort();
    }
    if (trace) print_frame("  <-", r.value);
    check_sent(h, r.value);
    rest = rest.subspan(r.consumed);
  }
  h.output.erase(h.output.begin(), h.output.end() - static_cast<std::ptrdiff_t>(rest.size()));
}

// A reading peer takes everything; one that stalls reads only when a record says so.
void check_output(harness& h) {
  if (!h.peer_stalls) read_output(h, SIZE_MAX);
}

void deliver(harness& h) {
  if (trace) {  // what the peer sends: frames, and raw bytes from where they stop decoding
    std::span<const std::byte> rest(h.pending);
    for (auto r = wire::decode(rest); r.status == wire::decode_status::complete;
         r = wire::decode(rest)) {
      print_frame("->", r.value);
      rest = rest.subspan(r.consumed);
    }
    if (!rest.empty()) std::fprintf(stderr, "-> %zu other bytes\n", rest.size());
  }
  if (!h.pending.empty() && !h.to_server->closed) {
    h.to_server->bytes.insert(h.to_server->bytes.end(), h.pending.begin(), h.pending.end());
    h.to_server->wake.notify();
  }
  h.pending.clear();
  run_until_idle(h);
  check_output(h);
}

// ---- what the local side does with streams ------------------------------------------------

// Echoes the stream back, half-close included.
asio::awaitable<void> echo(harness& h, std::unique_ptr<mux::channel> ch) {
  for (;;) {
    auto [ec, bytes] = co_await ch->receive();
    if (ec) break;
    if (bytes.empty()) {
      co_await ch->send_eof();
      break;
    }
    std::vector<std::byte> copy(bytes.begin(), bytes.end());
    ch->consumed(bytes.size());
    std::span<const std::byte> rest(copy);
    bool failed = false;
    while (!rest.empty() && !failed) {
      auto [cec, credit] = co_await ch->wait_send_credit();
      if (cec) failed = true;
      const auto n = std::min(credit, rest.size());
      if (!failed && co_await ch->send(rest.first(n))) failed = true;
      rest = rest.subspan(n);
    }
    if (failed) break;
  }
  --h.live_tasks;
}

// Reads the way the relay reads an idle connection: a callback, then try_receive().
struct callback_reader : std::enable_shared_from_this<callback_reader> {
  harness& h;
  std::unique_ptr<mux::channel> ch;
  callback_reader(harness& hh, std::unique_ptr<mux::channel> c) : h(hh), ch(std::move(c)) {}

  void step() {
    for (;;) {
      auto [ec, bytes] = ch->try_receive();
      if (ec == asio::error::would_block) {
        ch->when_receivable([self = shared_from_this()] { self->step(); });
        return;
      }
      if (ec || bytes.empty()) {
        --h.live_tasks;
        return;
      }
      ch->consumed(bytes.size());
    }
  }
};

void on_open(harness& h, mux::incoming_stream in) {
  if (in.target().device == "nowhere") return in.refuse(errc::unknown_device, "no such device");
  switch (in.target().port % 6) {
    case 0: {
      ++h.live_tasks;
      asio::co_spawn(h.io, echo(h, in.accept()), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
      return;
    }
    case 1:
      if (h.held.size() < 64) h.held.push_back({in.accept()});
      return;
    case 2:
      in.accept()->reset(errc::refused);
      return;
    case 3:
      return;  // dropped unanswered: refused with errc::internal
    case 4:
      return in.refuse(errc::forbidden, "not for you");
    default: {
      ++h.live_tasks;
      auto r = std::make_shared<callback_reader>(h, in.accept());
      r->step();
      return;
    }
  }
}

// The local side opens a stream toward the peer (as a server does toward agents).
asio::awaitable<void> open_toward_peer(harness& h, std::uint16_t port) {
  mux::target t{"dev-1", port, mux::protocol::tcp};
  auto [ec, ch] = co_await h.session->open(t);
  if (!ec && h.held.size() < 64) h.held.push_back({std::move(ch)});
  --h.live_tasks;
}

asio::awaitable<void> send_eof_on(harness& h, std::size_t index) {
  auto& ch = *h.held[index].ch;
  co_await ch.send_eof();
  h.held[index].busy = false;
  --h.live_tasks;
}

asio::awaitable<void> send_on(harness& h, std::size_t index, std::size_t n) {
  auto& ch = *h.held[index].ch;
  auto [ec, credit] = co_await ch.wait_send_credit();
  if (!ec) co_await ch.send(std::span(pattern()).first(std::min({n, credit, pattern().size()})));
  h.held[index].busy = false;
  --h.live_tasks;
}

void spawn(harness& h, asio::awaitable<void> task) {
  ++h.live_tasks;
  asio::co_spawn(h.io, std::move(task), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
}

bool local_action(harness& h, input& in) {
  const auto what = in.u8();
  const auto pick = in.u8();
  harness::held_stream* held = h.held.empty() ? nullptr : &h.held[pick % h.held.size()];
  const std::size_t index = h.held.empty() ? 0 : pick % h.held.size();
  const bool usable = held && held->ch;
  if (trace) {
    static constexpr const char* names[] = {"open toward the peer",
                                            "GOAWAY",
                                            "reset",
                                            "send_eof",
                                            "send",
                                            "drain",
                                            "drop",
                                            "close",
                                            "none"};
    std::fprintf(stderr, "local: %s (held stream %zu of %zu%s)\n", names[what % 9], index,
                 h.held.size(), usable ? "" : ", gone");
  }
  switch (what % 9) {
    case 0:
      spawn(h, open_toward_peer(h, in.u16()));
      return true;
    case 1:
      h.session->goaway(errc::going_away, message(in));
      return true;
    case 2:
      if (usable) held->ch->reset(errc::stream_reset);
      return true;
    case 3:
      if (usable && !held->busy) {
        held->busy = true;
        spawn(h, send_eof_on(h, index));
      }
      return true;
    case 4: {
      const auto n = in.u16();
      if (usable && !held->busy) {
        held->busy = true;
        spawn(h, send_on(h, index, n));
      }
      return true;
    }
    case 5:  // drain what has arrived
      for (int i = 0; usable && i < 16; ++i) {
        auto [ec, bytes] = held->ch->try_receive();
        if (ec || bytes.empty()) break;
        held->ch->consumed(bytes.size());
      }
      return true;
    case 6:  // drop: the destructor resets an unfinished stream
      if (usable && !held->busy) held->ch.reset();
      return true;
    case 7:
      h.session->close();
      return false;
    default:
      return true;
  }
}

// ---- frames from the peer ----------------------------------------------------------------

void peer_frame(harness& h, input& in, std::uint8_t kind) {
  auto put = [&](const wire::frame& f) { wire::encode(f, h.pending); };
  switch (kind) {
    case 0: {  // OPEN
      const auto id = stream_id(in);
      const auto proto = static_cast<std::uint8_t>(in.u8() % 2);
      const auto port = in.u16();
      const auto w = window(in);
      put(wire::open{id, proto, port, w, devices[in.u8() % std::size(devices)]});
      return;
    }
    case 1: {  // DATA
      const auto id = stream_id(in);
      const auto flags = in.u8();
      const std::size_t len = in.u16() % (wire::max_data_payload + 1);
      const auto payload = flags & 2 ? in.bytes(len) : std::span(pattern()).first(len);
      put(wire::data{id, (flags & 1) != 0, payload});
      return;
    }
    case 2: {  // WINDOW_UPDATE; 0 and above max_window are invalid
      const auto id = stream_id(in);
      const auto b = in.u8();
      const std::uint32_t inc = b < 128 ? b : b < 250 ? (1u << (b % 32)) : in.u32();
      put(wire::window_update{id, inc});
      return;
    }
    case 3: {  // RESET
      const auto id = stream_id(in);
      const auto code = in.u8();
      put(wire::reset{id, code, message(in)});
      return;
    }
    case 4: {  // PING
      const bool ack = in.u8() & 1;
      put(wire::ping{ack, in.u64()});
      return;
    }
    case 5: {  // GOAWAY
      const auto last = stream_id(in);
      const auto code = in.u8();
      put(wire::goaway{last, code, message(in)});
      return;
    }
    case 6: {  // OPEN_RESULT (the local side opens even ids)
      const auto id = stream_id(in);
      const auto code = static_cast<std::uint8_t>(in.u8() % 18);
      const auto w = window(in);
      put(wire::open_result{id, code, w, message(in)});
      return;
    }
    case 7: {  // handshake frames, which are out of place now
      switch (in.u8() % 3) {
        case 0:
          put(wire::hello{1, wire::role::client, 65536, 65536, "good"});
          return;
        case 1:
          put(wire::welcome{1, 65536, 65536, 1000});
          return;
        default:
          put(wire::refuse{6, message(in)});
          return;
      }
    }
    default: {  // raw bytes, verbatim
      const auto b = in.bytes(in.u8());
      h.pending.insert(h.pending.end(), b.begin(), b.end());
      return;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Log calls still format their arguments (peer messages among them), into nothing.
  auto logger =
      std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::trace);
  trace = std::getenv("FUZZ_SESSION_TRACE") != nullptr;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in(data, size);
  harness h;

  // Settings and the peer's windows come from the first bytes: small ones make credit,
  // window updates and the stream limit come into play.
  const auto setup = in.u8();
  mux::session_settings settings;
  settings.stream_window = setup & 1 ? 65536 : 2u << 20;
  settings.session_window = setup & 2 ? 131072 : 16u << 20;
  settings.max_streams = setup & 4 ? 4 : 10000;
  settings.keepalive = std::chrono::milliseconds(0);  // no timers: deterministic runs
  settings.handshake_timeout = std::chrono::hours(1);
  settings.open_timeout = std::chrono::hours(1);
  const auto peer_session_window = setup & 8 ? 100 : 16u << 20;
  const auto peer_stream_window = setup & 16 ? 100 : 2u << 20;
  const auto role = setup & 32 ? wire::role::agent : wire::role::client;
  // A peer that does not read: the pipe toward it holds 16 KiB, like a full socket buffer,
  // and the session may queue little more.
  h.peer_stalls = setup & 64;
  if (h.peer_stalls) h.to_client->capacity = 16384;
  if (setup & 128) settings.max_queued_bytes = 64 * 1024;

  auto server_end = std::make_unique<memory_stream>(h.io.get_executor(), h.to_server, h.to_client);
  h.session = mux::session::make(std::move(server_end), settings);
  asio::co_spawn(h.io,
                 h.session->start_server(
                     // Generic: the authenticator's signature may grow a `why` for the refusal.
                     [](wire::role, std::string_view token, auto&...) {
                       return token == "good" ? errc::ok : errc::bad_token;
                     },
                     [&h](mux::incoming_stream s) { on_open(h, std::move(s)); }),
                 [&h](std::exception_ptr e, asio::error_code ec) {
                   if (e) std::rethrow_exception(e);
                   h.started = true;
                   h.start_result = ec;
                 });
  wire::encode(
      wire::hello{wire::protocol_version, role, peer_session_window, peer_stream_window, "good"},
      h.pending);
  deliver(h);
  check(h.started && !h.start_result, "a valid HELLO was not welcomed");

  bool going = true;
  while (going && !in.empty()) {
    const auto kind = in.u8();
    if (kind < 200) {
      peer_frame(h, in, kind % 9);
    } else if (kind < 230) {
      deliver(h);
    } else if (kind < 240) {  // the peer reads some of what it was sent
      deliver(h);
      read_output(h, std::size_t{in.u16()} << (kind % 8));
      run_until_idle(h);
    } else {
      deliver(h);
      going = local_action(h, in);
      run_until_idle(h);
      check_output(h);
    }
  }
  deliver(h);

  // The peer goes away, reading nothing more: the session must end, and with it everything
  // the handler started.
  h.to_server->closed = true;
  h.to_client->reader_closed = true;
  h.to_server->wake.notify();
  h.to_client->space.notify();
  run_until_idle(h);
  read_output(h, SIZE_MAX);
  check(h.session->closed(), "the session outlived its byte stream");
  check(h.session->stream_count() == 0, "streams left after the session ended");
  check(h.live_tasks == 0, "a stream's task still waits after its session ended");
  h.held.clear();
  run_until_idle(h);
  check(h.session.use_count() == 1, "something still holds the session after it ended");
  return 0;
}
