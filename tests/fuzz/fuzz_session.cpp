// Fuzzes a whole server-side session: a valid HELLO, then whatever the fuzzer's bytes make of
// the rest, over the in-memory pipe of the unit tests.
//
// The first byte chooses the settings: small windows on either side, a limit of 4 streams,
// the client or agent role, a peer that stalls (reads the session's output only when told,
// through a pipe that holds 16 KiB) and a small bound on queued output. The rest is a
// sequence of records; the first byte of each picks what it is (tests/fuzz/make_seeds.py
// writes them):
//   - a frame of each type, DATAGRAM and MOVE included, its fields filled from the bytes after it
//     (stream ids mostly from a small set, so frames meet the streams they belong to), or raw
//     bytes verbatim;
//   - a delivery point: what was written so far reaches the session, which runs until idle;
//   - a read by a stalling peer of some of the session's output;
//   - an action of the local side: open a TCP stream or a UDP flow toward the peer, GOAWAY,
//     reset, half-close, send on, drain or drop a held stream, send one datagram or a burst
//     of them on it (0 to 65,535 bytes: above 65,507 they are too large), close the session.
// The open handler decides by port: echo the stream back (a flow: each datagram, with
// try_send_datagram), hold it for the actions above, read it through
// try_receive()/when_receivable() (a flow: and echo it), reset it, refuse it, or drop it
// unanswered.
//
// Everything runs on one thread, one handler at a time, and no timer ever expires, so a run
// is deterministic. The harness keeps the peer's side of the books from the frames it
// delivered (the windows it granted, the datagrams it sent) and the local side's (the
// datagrams it sent), and checks what the session writes against them:
//   - every byte decodes as valid frames;
//   - no DATA or MOVE after the session's own FIN, MOVE or RESET on that stream, no DATAGRAM
//     after its RESET;
//   - DATA only on TCP streams and DATAGRAM only on flows, both only on streams opened;
//   - no DATAGRAM above 65,507 bytes; the DATAGRAMs of a flow are those its local side sent,
//     whole and in order (the ones dropped at a reset are the last ones);
//   - DATA and DATAGRAM bytes stay within the windows the peer granted, per stream and in all;
// and against the local side: each datagram a flow's reader gets is one the peer sent, whole
// and in order (drops allowed); try_send_datagram fails on a TCP stream and refuses what is
// above 65,507 bytes, and when nothing is in flight either way it sends or refuses for want
// of credit exactly as the windows left in the books say; the byte-stream calls fail on a
// flow. After every handler,
// queued_bytes() stays within max_queued_bytes plus one read's worth of answers, a batch
// being written and the frames of the local side's own actions. At the end the peer goes
// away; the session must end, every coroutine of the handler must finish and nothing may
// keep the session alive. FUZZ_SESSION_TRACE=1 prints the frames both ways and the local
// actions.

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
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

// Bytes for DATA and DATAGRAM payloads when the input should not pay for them: long enough
// for a datagram of 65,535 bytes (too large) taken at any of 251 offsets, so that datagrams
// of one size still differ.
constexpr std::size_t pattern_offsets = 251;
const std::vector<std::byte>& pattern() {
  static const std::vector<std::byte> p = [] {
    std::vector<std::byte> v(0xffff + pattern_offsets);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::byte(i * 131 + (i >> 8));
    return v;
  }();
  return p;
}

// A datagram as the books keep it.
struct fingerprint {
  std::size_t size = 0;
  std::uint64_t hash = 0;
  bool operator==(const fingerprint&) const = default;
};

fingerprint fingerprint_of(std::span<const std::byte> d) {
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (auto b : d) h = (h ^ static_cast<std::uint8_t>(b)) * 1099511628211ull;
  return {d.size(), h};
}

// The session is the server: the peer opens odd stream ids, the local side even ones.
bool opened_by_peer(std::uint32_t id) {
  return id % 2 == 1;
}

// A flow's key in the books of the local side: a stream the peer opened is known by its id
// from the start; one the local side opens only by its port (each local open gets a port of
// its own) until the session's OPEN frame for it is read.
using flow_key = std::uint64_t;
flow_key peer_flow(std::uint32_t id) {
  return id;
}
flow_key local_flow(std::uint16_t port) {
  return flow_key{1} << 32 | port;
}

// What one read of the session (256 KiB) may make it answer: an OPEN of 19 bytes may cost
// an OPEN_RESULT and a RESET of 60.
constexpr std::size_t answers_per_read = 4 * 256 * 1024;
// A batch being written holds up to 256 KiB of DATA besides control frames, and one frame
// more: at most a DATAGRAM's.
constexpr std::size_t batch_in_flight = 256 * 1024 + wire::header_size + wire::max_payload;
// Control frames an action of the local side may queue (OPEN, RESET, GOAWAY); the local
// side is trusted, so they are not held to max_queued_bytes.
constexpr std::size_t frames_per_local_action = 128;

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
    bool udp = false;
    flow_key key = 0;
  };
  std::vector<held_stream> held;
  int live_tasks = 0;        // handler coroutines and callbacks not done
  bool peer_stalls = false;  // the peer reads the session's output only when told to
  bool started = false;      // start_server() completed
  asio::error_code start_result;
  unsigned pattern_turn = 0;  // the offset into pattern() of the next datagram made from it

  // The peer's books, kept from the bytes delivered to the session, frame by frame as the
  // session decodes them. Where the session stops reading (a violation, a backlog) the books
  // go on: they may grant more than the session saw, never less.
  std::vector<std::byte> delivered;  // delivered bytes not yet a whole frame
  bool delivered_broken = false;     // they stopped decoding: the session ended there
  bool hello_seen = false;
  std::int64_t granted_session = 0;
  std::map<std::uint32_t, std::int64_t> granted;  // per stream: OPEN, OPEN_RESULT, updates
  std::int64_t sent_session = 0;                  // DATA and DATAGRAM bytes the session wrote
  std::map<std::uint32_t, std::int64_t> sent;
  std::map<std::uint32_t, mux::protocol> proto;  // every stream opened, either way
  std::map<std::uint32_t, std::deque<fingerprint>> peer_datagrams;  // by stream id

  // The local side's books.
  std::map<flow_key, std::deque<fingerprint>> local_datagrams;  // sent, not yet seen written
  std::set<std::uint16_t> local_ports;                          // used by local opens
  std::map<std::uint16_t, std::uint32_t> local_ids;             // port -> id, from the output
  std::map<std::uint32_t, std::uint16_t> local_ports_of;        // id -> port
  std::size_t queue_limit = 0;  // what queued_bytes() may reach, local actions aside
  std::size_t local_actions = 0;
  std::size_t max_queued = 0;  // the session's max_queued_bytes
  std::set<std::uint32_t> accepted_by_peer;  // local opens the peer's OPEN_RESULT accepted
};

// The stream id of a flow, once known.
std::optional<std::uint32_t> id_of(const harness& h, flow_key key) {
  if (key >> 32 == 0) return static_cast<std::uint32_t>(key);
  const auto it = h.local_ids.find(static_cast<std::uint16_t>(key));
  if (it == h.local_ids.end()) return std::nullopt;
  return it->second;
}

void check_queue(const harness& h) {
  const auto queued = h.session->queued_bytes();
  if (queued <= h.queue_limit + h.local_actions * frames_per_local_action) return;
  std::fprintf(stderr, "fuzz_session: %zu bytes queued toward the peer, above the bound of %zu\n",
               queued, h.queue_limit + h.local_actions * frames_per_local_action);
  std::abort();
}

// Runs ready handlers one at a time until there are none, checking the output queue after
// each; bounded, so a livelock is reported instead of spinning forever.
void run_until_idle(harness& h) {
  for (int i = 0; i < 1000000; ++i) {
    h.io.restart();
    if (h.io.poll_one() == 0) {
      h.io.restart();
      return;
    }
    check_queue(h);
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
          std::fprintf(stderr, "%s OPEN %u %s port %u\n", dir, x.stream_id,
                       x.proto == 0 ? "tcp" : "udp", x.port);
        else if constexpr (std::is_same_v<T, wire::open_result>)
          std::fprintf(stderr, "%s OPEN_RESULT %u code %u\n", dir, x.stream_id, x.code);
        else if constexpr (std::is_same_v<T, wire::data>)
          std::fprintf(stderr, "%s DATA %u %zu bytes%s\n", dir, x.stream_id, x.payload.size(),
                       x.fin ? " FIN" : "");
        else if constexpr (std::is_same_v<T, wire::datagram>)
          std::fprintf(stderr, "%s DATAGRAM %u %zu bytes\n", dir, x.stream_id, x.payload.size());
        else if constexpr (std::is_same_v<T, wire::move>)
          std::fprintf(stderr, "%s MOVE %u\n", dir, x.stream_id);
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

[[noreturn]] void fail_on(const char* what, std::uint32_t id) {
  std::fprintf(stderr, "fuzz_session: %s (stream %u)\n", what, id);
  std::abort();
}

// Bytes of DATA or DATAGRAM the session wrote on `id`: within the peer's windows.
void spend(harness& h, std::uint32_t id, std::size_t n) {
  h.sent_session += static_cast<std::int64_t>(n);
  h.sent[id] += static_cast<std::int64_t>(n);
  if (h.sent_session > h.granted_session)
    fail_on("the session sent more than the peer's session window", id);
  if (h.sent[id] > h.granted[id]) fail_on("the session sent more than the stream's window", id);
}

// What the session sends must keep the protocol whatever its peer or its local side does.
void check_sent(harness& h, const wire::frame& f) {
  if (const auto* o = std::get_if<wire::open>(&f)) {
    if (opened_by_peer(o->stream_id))
      fail_on("the session opened a stream of the peer's", o->stream_id);
    h.proto.emplace(o->stream_id, static_cast<mux::protocol>(o->proto));
    h.local_ids[o->port] = o->stream_id;
    h.local_ports_of[o->stream_id] = o->port;
  } else if (const auto* d = std::get_if<wire::data>(&f)) {
    if (h.ended_out.contains(d->stream_id))
      fail_on("the session sent DATA after its FIN or RESET", d->stream_id);
    const auto p = h.proto.find(d->stream_id);
    if (p == h.proto.end()) fail_on("the session sent DATA on a stream never opened", d->stream_id);
    if (p->second == mux::protocol::udp)
      fail_on("the session sent DATA on a UDP flow", d->stream_id);
    spend(h, d->stream_id, d->payload.size());
    if (d->fin) h.ended_out.insert(d->stream_id);
  } else if (const auto* g = std::get_if<wire::datagram>(&f)) {
    const auto id = g->stream_id;
    if (h.ended_out.contains(id)) fail_on("the session sent a DATAGRAM after its RESET", id);
    const auto p = h.proto.find(id);
    if (p == h.proto.end()) fail_on("the session sent a DATAGRAM on a stream never opened", id);
    if (p->second != mux::protocol::udp) fail_on("the session sent a DATAGRAM on a TCP stream", id);
    if (g->payload.size() > wire::max_datagram)
      fail_on("the session sent a DATAGRAM above 65,507 bytes", id);
    spend(h, id, g->payload.size());
    const auto key = opened_by_peer(id) ? peer_flow(id) : local_flow(h.local_ports_of.at(id));
    auto& q = h.local_datagrams[key];
    if (q.empty() || q.front() != fingerprint_of(g->payload))
      fail_on("the session sent a datagram its local side did not send, or out of order", id);
    q.pop_front();
  } else if (const auto* m = std::get_if<wire::move>(&f)) {
    if (h.ended_out.contains(m->stream_id))
      fail_on("the session sent MOVE after its FIN or RESET", m->stream_id);
    if (!h.proto.contains(m->stream_id))
      fail_on("the session sent MOVE on a stream never opened", m->stream_id);
    h.ended_out.insert(m->stream_id);  // a MOVE ends its direction as FIN does
  } else if (const auto* r = std::get_if<wire::reset>(&f)) {
    h.ended_out.insert(r->stream_id);
  }
}

// The peer's books: what a frame delivered to the session grants or sends.
void note_delivered(harness& h, const wire::frame& f) {
  if (const auto* hello = std::get_if<wire::hello>(&f)) {
    if (!h.hello_seen) h.granted_session = hello->session_window;
    h.hello_seen = true;
  } else if (const auto* o = std::get_if<wire::open>(&f)) {
    // A second OPEN of an id is a violation: the first one's protocol and window stand.
    if (opened_by_peer(o->stream_id) &&
        h.proto.emplace(o->stream_id, static_cast<mux::protocol>(o->proto)).second)
      h.granted[o->stream_id] += o->window;
  } else if (const auto* r = std::get_if<wire::open_result>(&f)) {
    // As the session does: the window of the first OPEN_RESULT for a stream it opened
    // replaces what came before (another is a violation).
    if (r->code == 0 && !opened_by_peer(r->stream_id) &&
        h.accepted_by_peer.insert(r->stream_id).second)
      h.granted[r->stream_id] = r->window;
  } else if (const auto* w = std::get_if<wire::window_update>(&f)) {
    if (w->stream_id == 0)
      h.granted_session += w->increment;
    else
      h.granted[w->stream_id] += w->increment;
  } else if (const auto* g = std::get_if<wire::datagram>(&f)) {
    h.peer_datagrams[g->stream_id].push_back(fingerprint_of(g->payload));
  }
}

// A datagram a flow's local side got: the peer sent it, after the ones got before (the
// session may drop some in between, never reorder, merge or split them).
void note_received(harness& h, std::optional<std::uint32_t> id, std::span<const std::byte> d) {
  if (!id) return;  // a local open whose OPEN the stalling peer has not read yet
  auto& q = h.peer_datagrams[*id];
  const auto fp = fingerprint_of(d);
  while (!q.empty() && q.front() != fp) q.pop_front();
  if (q.empty()) fail_on("a flow received a datagram its peer did not send, or out of order", *id);
  q.pop_front();
}

// Offers a datagram on a stream and checks the verdict; a datagram sent joins the books.
mux::datagram_status send_datagram(harness& h, mux::channel& ch, bool udp, flow_key key,
                                   std::span<const std::byte> d) {
  using mux::datagram_status;
  const auto status = ch.try_send_datagram(d);
  if (!udp)
    check(status == datagram_status::failed, "try_send_datagram on a TCP stream did not fail");
  if (d.size() > wire::max_datagram)
    check(status == datagram_status::too_large || status == datagram_status::failed,
          "a datagram above 65,507 bytes was not refused as too large");
  if (status == datagram_status::sent) h.local_datagrams[key].push_back(fingerprint_of(d));
  return status;
}

// A datagram made of pattern() bytes, at the next offset.
std::span<const std::byte> pattern_datagram(harness& h, std::size_t size) {
  return std::span(pattern()).subspan(h.pattern_turn++ % pattern_offsets, size);
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

// Takes delivered bytes into the peer's books, frame by frame as the session decodes them.
void mirror_delivered(harness& h, std::span<const std::byte> bytes) {
  if (h.delivered_broken) return;
  h.delivered.insert(h.delivered.end(), bytes.begin(), bytes.end());
  std::span<const std::byte> rest(h.delivered);
  for (;;) {
    const auto r = wire::decode(rest);
    if (r.status == wire::decode_status::need_more) break;
    if (r.status == wire::decode_status::error) {
      if (trace) std::fprintf(stderr, "-> bytes that do not decode: %s\n", r.reason);
      h.delivered_broken = true;
      h.delivered.clear();
      return;
    }
    if (trace) print_frame("->", r.value);
    note_delivered(h, r.value);
    rest = rest.subspan(r.consumed);
  }
  h.delivered.erase(h.delivered.begin(),
                    h.delivered.end() - static_cast<std::ptrdiff_t>(rest.size()));
}

void deliver(harness& h) {
  if (!h.pending.empty() && !h.to_server->closed) {
    mirror_delivered(h, h.pending);
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
    if (bytes.empty()) {  // the peer's FIN, or its MOVE: answered as the server does
      if (const auto token = ch->moved_away())
        co_await ch->send_move(*token);
      else
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

// Echoes a flow back, datagram by datagram, as a UDP service would; what cannot go is dropped.
asio::awaitable<void> echo_datagrams(harness& h, std::unique_ptr<mux::channel> ch,
                                     std::uint32_t id) {
  for (;;) {
    auto [ec, d] = co_await ch->receive();
    if (ec) break;
    note_received(h, id, d);
    send_datagram(h, *ch, true, peer_flow(id), d);
    ch->consumed(d.size());
  }
  --h.live_tasks;
}

// Reads the way the relay reads an idle connection: a callback, then try_receive(). A flow
// is echoed back, the way the relay's UDP side answers.
struct callback_reader : std::enable_shared_from_this<callback_reader> {
  harness& h;
  std::unique_ptr<mux::channel> ch;
  bool udp;
  std::uint32_t id;
  callback_reader(harness& hh, std::unique_ptr<mux::channel> c, bool u, std::uint32_t i)
      : h(hh), ch(std::move(c)), udp(u), id(i) {}

  void step() {
    for (;;) {
      auto [ec, bytes] = ch->try_receive();
      if (ec == asio::error::would_block) {
        ch->when_receivable([self = shared_from_this()] { self->step(); });
        return;
      }
      if (ec || (!udp && bytes.empty())) {  // a flow's empty span is an empty datagram
        --h.live_tasks;
        return;
      }
      if (udp) {
        note_received(h, id, bytes);
        send_datagram(h, *ch, true, peer_flow(id), bytes);
      }
      ch->consumed(bytes.size());
    }
  }
};

void spawn(harness& h, asio::awaitable<void> task) {
  ++h.live_tasks;
  asio::co_spawn(h.io, std::move(task), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
}

void on_open(harness& h, mux::incoming_stream in) {
  if (in.target().device == "nowhere") return in.refuse(errc::unknown_device, "no such device");
  const bool udp = in.target().proto == mux::protocol::udp;
  const auto id = in.id();
  switch (in.target().port % 6) {
    case 0:
      spawn(h, udp ? echo_datagrams(h, in.accept(), id) : echo(h, in.accept(!udp)));
      return;
    case 1:
      if (h.held.size() < 64) h.held.push_back({in.accept(!udp), false, udp, peer_flow(id)});
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
      auto r = std::make_shared<callback_reader>(h, in.accept(), udp, id);
      r->step();
      return;
    }
  }
}

// The local side opens a stream toward the peer (as a server does toward agents).
asio::awaitable<void> open_toward_peer(harness& h, std::uint16_t port, mux::protocol proto) {
  mux::target t{"dev-1", port, proto};
  auto [ec, ch] = co_await h.session->open(t);
  if (!ec && h.held.size() < 64)
    h.held.push_back({std::move(ch), false, proto == mux::protocol::udp, local_flow(port)});
  --h.live_tasks;
}

// Each local open gets a port of its own: the books tell its flow by it until its id is read.
std::optional<std::uint16_t> unused_local_port(harness& h, std::uint16_t port) {
  for (int i = 0; i < 65536; ++i, ++port)
    if (h.local_ports.insert(port).second) return port;
  return std::nullopt;
}

// `h.held` may grow while these wait: they index it afresh after each co_await.
asio::awaitable<void> send_eof_on(harness& h, std::size_t index) {
  auto& ch = *h.held[index].ch;
  const auto ec = co_await ch.send_eof();
  if (h.held[index].udp) check(static_cast<bool>(ec), "send_eof on a UDP flow succeeded");
  h.held[index].busy = false;
  --h.live_tasks;
}

asio::awaitable<void> send_on(harness& h, std::size_t index, std::size_t n) {
  auto& ch = *h.held[index].ch;
  auto [ec, credit] = co_await ch.wait_send_credit();
  if (h.held[index].udp)
    check(ec == make_error_code(errc::unsupported), "wait_send_credit on a UDP flow did not fail");
  if (!ec)
    co_await ch.send(std::span(pattern()).first(std::min({n, credit, wire::max_data_payload})));
  h.held[index].busy = false;
  --h.live_tasks;
}

enum class local_op {
  open_tcp,
  goaway,
  reset,
  send_eof,
  send,
  drain,
  drop,
  close,
  open_udp,
  send_datagram,
  send_datagrams,
  none,
  count
};

constexpr const char* local_op_names[] = {"open a TCP stream toward the peer",
                                          "GOAWAY",
                                          "reset",
                                          "send_eof",
                                          "send",
                                          "drain",
                                          "drop",
                                          "close",
                                          "open a UDP flow toward the peer",
                                          "send a datagram",
                                          "send a burst of datagrams",
                                          "none"};
static_assert(std::size(local_op_names) == static_cast<std::size_t>(local_op::count));

const char* status_name(mux::datagram_status s) {
  switch (s) {
    case mux::datagram_status::sent:
      return "sent";
    case mux::datagram_status::no_credit:
      return "no credit";
    case mux::datagram_status::backlogged:
      return "backlogged";
    case mux::datagram_status::too_large:
      return "too large";
    default:
      return "failed";
  }
}

// What the books leave: of the windows the peer granted, less what it was sent.
std::int64_t left_on_stream(const harness& h, std::uint32_t id) {
  const auto g = h.granted.find(id);
  const auto s = h.sent.find(id);
  return (g == h.granted.end() ? 0 : g->second) - (s == h.sent.end() ? 0 : s->second);
}
std::int64_t left_on_session(const harness& h) {
  return h.granted_session - h.sent_session;
}

// What try_send_datagram must answer for `n` bytes on a held flow, when the books know: the
// session has read and handled everything delivered, the peer has read everything written,
// and nothing waits to be written. Then the session's credit is exactly what the peer granted
// less what it was sent, on the stream and on the session, whatever came and went before
// (streams reset with bytes still queued included).
std::optional<mux::datagram_status> expected_verdict(const harness& h,
                                                     const harness::held_stream& s,
                                                     std::size_t n) {
  using mux::datagram_status;
  if (!s.udp || !s.ch || s.ch->error() || h.session->closed()) return std::nullopt;
  if (!h.to_server->bytes.empty() || !h.to_client->bytes.empty() || !h.output.empty() ||
      h.session->queued_bytes() != 0)
    return std::nullopt;
  if (n > wire::max_datagram) return datagram_status::too_large;
  if (wire::header_size + n > h.max_queued / 2) return std::nullopt;  // may be backlogged
  const auto id = id_of(h, s.key);
  if (!id) return std::nullopt;
  const auto size = static_cast<std::int64_t>(n);
  const bool credit = size <= left_on_stream(h, *id) && size <= left_on_session(h);
  return credit ? datagram_status::sent : datagram_status::no_credit;
}

bool local_action(harness& h, input& in) {
  const auto op = static_cast<local_op>(in.u8() % static_cast<std::uint8_t>(local_op::count));
  const auto pick = in.u8();
  harness::held_stream* held = h.held.empty() ? nullptr : &h.held[pick % h.held.size()];
  const std::size_t index = h.held.empty() ? 0 : pick % h.held.size();
  const bool usable = held && held->ch;
  ++h.local_actions;
  if (trace)
    std::fprintf(stderr, "local: %s (held stream %zu of %zu%s%s)\n",
                 local_op_names[static_cast<int>(op)], index, h.held.size(),
                 usable && held->udp ? ", a flow" : "", usable ? "" : ", gone");
  switch (op) {
    case local_op::open_tcp:
    case local_op::open_udp:
      if (const auto port = unused_local_port(h, in.u16()))
        spawn(h, open_toward_peer(
                     h, *port, op == local_op::open_udp ? mux::protocol::udp : mux::protocol::tcp));
      return true;
    case local_op::goaway:
      h.session->goaway(errc::going_away, message(in));
      return true;
    case local_op::reset:
      if (usable) held->ch->reset(errc::stream_reset);
      return true;
    case local_op::send_eof:
      if (usable && !held->busy) {
        held->busy = true;
        spawn(h, send_eof_on(h, index));
      }
      return true;
    case local_op::send: {
      const auto n = in.u16();
      if (usable && !held->busy) {
        held->busy = true;
        spawn(h, send_on(h, index, n));
      }
      return true;
    }
    case local_op::drain:  // what has arrived; a flow's empty span is an empty datagram
      for (int i = 0; usable && i < 16; ++i) {
        auto [ec, bytes] = held->ch->try_receive();
        if (ec || (!held->udp && bytes.empty())) break;
        if (held->udp) note_received(h, id_of(h, held->key), bytes);
        held->ch->consumed(bytes.size());
      }
      return true;
    case local_op::drop:  // the destructor resets an unfinished stream
      if (usable && !held->busy) held->ch.reset();
      return true;
    case local_op::close:
      h.session->close();
      return false;
    case local_op::send_datagram:
    case local_op::send_datagrams: {
      const int count = op == local_op::send_datagram ? 1 : 1 + in.u8();
      const std::size_t size = in.u16();
      for (int i = 0; usable && i < count; ++i) {
        // Only the first of a burst finds the session with nothing queued.
        const auto expected = i == 0 ? expected_verdict(h, *held, size) : std::nullopt;
        const auto status =
            send_datagram(h, *held->ch, held->udp, held->key, pattern_datagram(h, size));
        if (trace)
          std::fprintf(stderr, "local: a datagram of %zu bytes: %s\n", size, status_name(status));
        if (expected && status != *expected) {
          std::fprintf(stderr,
                       "fuzz_session: a datagram of %zu bytes was %s, but the windows the peer "
                       "granted leave %lld bytes on the stream and %lld on the session\n",
                       size, status_name(status),
                       static_cast<long long>(left_on_stream(h, *id_of(h, held->key))),
                       static_cast<long long>(left_on_session(h)));
          std::abort();
        }
      }
      return true;
    }
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
      if (flags & 4) {  // MOVE instead (lanes): the token from the same bytes
        wire::move m{id, {}};
        const auto t = in.bytes(m.token.size());
        std::copy(t.begin(), t.end(), m.token.begin());
        put(m);
        return;
      }
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
    case 8: {  // raw bytes, verbatim
      const auto b = in.bytes(in.u8());
      h.pending.insert(h.pending.end(), b.begin(), b.end());
      return;
    }
    default: {  // DATAGRAM: 0 to 65,535 bytes, of which above 65,507 are invalid
      const auto id = stream_id(in);
      const auto flags = in.u8();
      const std::size_t len = in.u16();
      const auto payload = flags & 2 ? in.bytes(len) : pattern_datagram(h, len);
      if (payload.size() <= wire::max_datagram) return put(wire::datagram{id, payload});
      // The encoder refuses to write it: the header by hand (length, type, flags, id).
      const auto n = payload.size();
      constexpr auto type = static_cast<std::size_t>(wire::frame_type::datagram);
      for (const std::size_t b : {n >> 16, n >> 8, n, type, std::size_t{0}, std::size_t{id} >> 24,
                                  std::size_t{id} >> 16, std::size_t{id} >> 8, std::size_t{id}})
        h.pending.push_back(static_cast<std::byte>(b & 0xff));
      h.pending.insert(h.pending.end(), payload.begin(), payload.end());
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
  settings.lanes = true;  // a client's streams may move (an agent's never offers it)
  const auto peer_session_window = setup & 8 ? 100 : 16u << 20;
  const auto peer_stream_window = setup & 16 ? 100 : 2u << 20;
  const auto role = setup & 32 ? wire::role::agent : wire::role::client;
  // A peer that does not read: the pipe toward it holds 16 KiB, like a full socket buffer,
  // and the session may queue little more.
  h.peer_stalls = setup & 64;
  if (h.peer_stalls) h.to_client->capacity = 16384;
  if (setup & 128) settings.max_queued_bytes = 64 * 1024;
  h.queue_limit = settings.max_queued_bytes + answers_per_read + batch_in_flight;
  h.max_queued = settings.max_queued_bytes;

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
      wire::hello{wire::protocol_version, role, peer_session_window, peer_stream_window, "good",
                  role == wire::role::client},
      h.pending);
  deliver(h);
  check(h.started && !h.start_result, "a valid HELLO was not welcomed");

  bool going = true;
  while (going && !in.empty()) {
    const auto kind = in.u8();
    if (kind < 200) {
      peer_frame(h, in, kind % 10);
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
