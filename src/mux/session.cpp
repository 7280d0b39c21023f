#include "tether/mux/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/redirect_error.hpp>
#include <cstring>
#include <limits>
#include <random>

#include "stream_channel.hpp"
#include "stream_state.hpp"
#include "tether/mux/yield.hpp"
#include "tether/printable.hpp"
#include "tether/wire/codec.hpp"

namespace tether::mux {
namespace {

constexpr std::size_t read_buffer_size = 256 * 1024;
// A write gathers control frames and DATA until about this much, then goes to the stream.
constexpr std::size_t write_batch = 256 * 1024;
// A read or a write at least this big is bulk: the loop that did it lets the rest of the
// event loop run before its next one (see yield.hpp).
constexpr std::size_t bulk_io = 64 * 1024;
// Received bytes gather in chunks this big, so one socket write can carry many frames.
constexpr std::size_t inbound_chunk_size = 256 * 1024;
constexpr std::size_t max_spare_chunks = 8;
// A first frame (HELLO or WELCOME) fits in this; the full read buffer comes after the
// handshake, so a connection that never says hello costs little.
constexpr std::size_t handshake_buffer_size = wire::header_size + 64 + wire::max_token;
// How long the GOAWAY that explains a protocol violation may take to go out.
constexpr std::chrono::seconds violation_flush_time{1};
// DATA on a stream the peer finished is told apart from DATA in flight after a RESET for
// this many of the most recently finished streams.
constexpr std::size_t peer_finished_memory = 1024;

// Logs an exception that escaped one of the session's loops (a bug: loops handle errors).
auto log_escape(const char* what) {
  return [what](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      spdlog::error("session {} loop ended by exception: {}", what, x.what());
    }
  };
}

// A window that saw no DATA for this long (or four round trips, if longer) goes back to
// its first size: the transfer that grew it is over.
constexpr std::chrono::seconds min_idle_after{1};
// While a window can still grow, the round trip is measured again when its last measurement
// is this old: paths change, and a measurement taken under load runs high.
constexpr std::chrono::seconds rtt_max_age{2};
// The round trip used is the least measured within this long (see rtt_ in session.hpp).
constexpr std::chrono::seconds rtt_min_window{10};

}  // namespace

std::uint32_t session_window_cap(const session_settings& s) noexcept {
  const auto twice = 2 * static_cast<std::uint64_t>(s.max_stream_window);
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(std::max<std::uint64_t>(s.session_window, twice), wire::max_window));
}

std::shared_ptr<session> session::make(std::unique_ptr<byte_stream> stream,
                                       session_settings settings) {
  return std::shared_ptr<session>(new session(std::move(stream), settings));
}

session::session(std::unique_ptr<byte_stream> stream, session_settings settings)
    : stream_(std::move(stream)),
      executor_(stream_->get_executor()),
      settings_(settings),
      peer_(stream_->peer()),
      recv_window_(settings.session_window, session_window_cap(settings),
                   std::chrono::steady_clock::now()),
      keepalive_timer_(executor_),
      hoarding_timer_(executor_) {
  read_buf_.resize(handshake_buffer_size);
}

session::~session() = default;

std::string session::peer() const { return peer_; }
bool session::closed() const noexcept { return closed_; }
std::size_t session::stream_count() const noexcept { return streams_.size(); }

// ---- handshake ---------------------------------------------------------------------------

asio::awaitable<std::pair<asio::error_code, wire::frame>> session::read_first_frame() {
  for (;;) {
    const auto r = wire::decode(std::span(read_buf_).first(read_have_));
    if (r.status == wire::decode_status::complete) {
      // The frame refers into read_buf_; the caller copies what it keeps before reading on.
      // Later bytes stay buffered for the read loop.
      wire::frame f = r.value;
      std::pair<asio::error_code, wire::frame> out{asio::error_code{}, f};
      // Shift the consumed bytes out only after the caller is done: remember the count.
      handshake_consumed_ = r.consumed;
      co_return out;
    }
    if (r.status == wire::decode_status::error) {
      spdlog::debug("session {}: bad first frame: {}", peer_, r.reason);
      first_frame_error_ = r.reason;
      co_return std::pair{make_error_code(r.error), wire::frame{}};
    }
    if (read_have_ == read_buf_.size()) {  // a header announcing more than any HELLO holds
      first_frame_error_ = "first frame longer than a HELLO can be";
      co_return std::pair{make_error_code(errc::frame_too_large), wire::frame{}};
    }
    auto [ec, n] = co_await stream_->read_some(
        asio::buffer(read_buf_.data() + read_have_, read_buf_.size() - read_have_));
    if (ec) co_return std::pair{ec, wire::frame{}};
    read_have_ += n;
  }
}

asio::awaitable<std::pair<asio::error_code, wire::frame>> session::read_handshake_frame() {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(executor_, settings_.handshake_timeout);
  auto outcome = co_await (read_first_frame() || deadline.async_wait(use_tuple));
  auto result = outcome.index() == 1
                    ? std::pair{make_error_code(errc::timed_out), wire::frame{}}
                    : std::get<0>(std::move(outcome));
  co_return result;
}

void session::drop_handshake_frame() {
  std::memmove(read_buf_.data(), read_buf_.data() + handshake_consumed_,
               read_have_ - handshake_consumed_);
  read_have_ -= handshake_consumed_;
  handshake_consumed_ = 0;
  // Up and running: now reads may be big.
  read_buf_.resize(read_buffer_size);
}

asio::awaitable<asio::error_code> session::start_client(std::string token, wire::role role,
                                                        open_handler on_open,
                                                        std::string& message) {
  auto self = shared_from_this();  // the caller may drop the session while we wait
  on_open_ = std::move(on_open);
  next_local_id_ = 1;
  std::vector<std::byte> hello_bytes;
  wire::encode(wire::hello{wire::protocol_version, role, settings_.session_window,
                           settings_.stream_window, token, settings_.lanes,
                           settings_.bulk_lane},
               hello_bytes);
  if (auto ec = co_await stream_->write(asio::buffer(hello_bytes))) co_return ec;

  auto [ec, f] = co_await read_handshake_frame();
  if (ec) {
    stream_->close();
    co_return ec;
  }
  if (auto* r = std::get_if<wire::refuse>(&f)) {
    message = printable(r->message);
    const auto code = errc_from_wire(r->code);
    stream_->close();
    co_return make_error_code(code);
  }
  auto* w = std::get_if<wire::welcome>(&f);
  if (!w) {
    stream_->close();
    co_return make_error_code(errc::protocol_error);
  }
  if (w->version != wire::protocol_version) {
    stream_->close();
    co_return make_error_code(errc::version_mismatch);
  }
  send_credit_ = w->session_window;
  peer_stream_window_ = w->stream_window;
  lanes_ = settings_.lanes && w->lanes;
  if (w->keepalive_ms > 0) settings_.keepalive = std::chrono::milliseconds(w->keepalive_ms);
  drop_handshake_frame();
  start_loops();
  co_return asio::error_code{};
}

asio::awaitable<asio::error_code> session::start_server(authenticator auth, open_handler on_open) {
  on_open_ = std::move(on_open);
  next_local_id_ = 2;
  auto self = shared_from_this();  // the caller may drop the session while we wait
  auto [ec, f] = co_await read_handshake_frame();
  if (ec == errc::protocol_error || ec == errc::frame_too_large) {
    std::string why = "bad HELLO: " + first_frame_error_;
    const auto code = ec == errc::protocol_error ? errc::protocol_error : errc::frame_too_large;
    co_return co_await refuse_hello(code, std::move(why));
  }
  if (ec) {
    stream_->close();
    co_return ec;
  }
  auto* h = std::get_if<wire::hello>(&f);
  if (!h) co_return co_await refuse_hello(errc::protocol_error, "expected HELLO");
  if (h->version != wire::protocol_version)
    co_return co_await refuse_hello(errc::version_mismatch, "this server speaks version 1");
  std::string why;
  if (const auto verdict = auth(h->role, h->token, why); verdict != errc::ok) {
    if (why.empty()) why = describe(verdict);
    co_return co_await refuse_hello(verdict, std::move(why));
  }

  send_credit_ = h->session_window;
  peer_stream_window_ = h->stream_window;
  lanes_ = settings_.lanes && h->lanes;
  peer_bulk_lane_ = h->bulk_lane;
  drop_handshake_frame();
  std::vector<std::byte> out;
  wire::encode(wire::welcome{wire::protocol_version, settings_.session_window,
                             settings_.stream_window,
                             static_cast<std::uint32_t>(settings_.keepalive.count()), lanes_},
               out);
  if (auto wec = co_await stream_->write(asio::buffer(out))) {
    stream_->close();
    co_return wec;
  }
  start_loops();
  co_return asio::error_code{};
}

asio::awaitable<asio::error_code> session::refuse_hello(errc code, std::string why) {
  // Bounded in time like the hello: a peer that does not read cannot hold the refusal.
  using namespace asio::experimental::awaitable_operators;
  std::vector<std::byte> out;
  wire::encode(wire::refuse{static_cast<std::uint8_t>(code), why}, out);
  asio::steady_timer deadline(executor_, violation_flush_time);
  co_await (stream_->write(asio::buffer(out)) || deadline.async_wait(use_tuple));
  stream_->close();
  refusal_ = std::move(why);
  co_return make_error_code(code);
}

void session::start_loops() {
  running_ = true;
  last_receive_ = std::chrono::steady_clock::now();
  auto self = shared_from_this();
  asio::co_spawn(executor_, read_loop(self), log_escape("read"));
  asio::co_spawn(executor_, write_loop(self), log_escape("write"));
  asio::co_spawn(executor_, keepalive_loop(self), log_escape("keepalive"));
}

// ---- loops -------------------------------------------------------------------------------

asio::awaitable<void> session::read_loop([[maybe_unused]] std::shared_ptr<session> self) {
  while (!closed_) {
    // Decode everything buffered, then read more. Frames refer into read_buf_, so the
    // buffer is compacted only after they have been handled.
    std::size_t offset = 0;
    for (;;) {
      const auto r = wire::decode(std::span(read_buf_).subspan(offset, read_have_ - offset));
      if (r.status == wire::decode_status::need_more) break;
      if (r.status == wire::decode_status::error) {
        violation(r.error, r.reason);
        co_return;
      }
      offset += r.consumed;
      if (!handle(r.value)) co_return;
    }
    // Nothing of the batch is referenced any more: readers may now run, and do whatever
    // they like to their streams (consume, reset, close).
    for (const auto& st : received_) st->receive_wake.notify_here();
    received_.clear();
    if (closed_) co_return;
    if (offset > 0) {
      std::memmove(read_buf_.data(), read_buf_.data() + offset, read_have_ - offset);
      read_have_ -= offset;
    }
    // After a big read the next is likely to find bytes at once, and so on for as long as
    // the peer sends: let the streams and the writer run in between.
    if (last_read_ >= bulk_io) {
      co_await yield_turn();
      if (closed_) co_return;
    }
    // A peer that does not read our answers (PING ACKs, refusals, window updates) is not
    // read either: its frames would only pile up more answers. The keepalive ends the
    // session if it stays that way.
    while (output_backlogged() && !closed_) co_await reader_wake_.wait();
    if (closed_) co_return;
    auto [ec, n] = co_await stream_->read_some(
        asio::buffer(read_buf_.data() + read_have_, read_buf_.size() - read_have_));
    if (ec) {
      if (ec == asio::error::eof)
        // Servers open even stream ids: their peer is a client (or an agent).
        fail(make_error_code(errc::session_lost),
             next_local_id_ % 2 == 0 ? "closed by the client" : "closed by the server");
      else if (ec != asio::error::operation_aborted)
        fail(make_error_code(errc::session_lost), ec.message());
      else
        fail(make_error_code(errc::session_lost), "closed");
      co_return;
    }
    read_have_ += n;
    last_read_ = n;
    last_receive_ = std::chrono::steady_clock::now();
  }
}

asio::awaitable<void> session::write_loop([[maybe_unused]] std::shared_ptr<session> self) {
  for (;;) {
    while (!closed_ && (writing_ || (control_out_.empty() && ready_head_ == ready_.size())))
      co_await writer_wake_.wait();
    if (closed_) {
      if (goaway_then_close_) co_await flush_goaway();
      co_return;
    }

    write_buf_.clear();
    std::swap(write_buf_, control_out_);  // control frames first
    // Round-robin: one DATA frame from each ready stream per turn, until the batch is full.
    while (write_buf_.size() < write_batch && ready_head_ < ready_.size()) {
      auto st = std::move(ready_[ready_head_++]);
      if (ready_head_ == ready_.size()) {
        ready_.clear();
        ready_head_ = 0;
      }
      st->scheduled = false;
      if (st->failure) continue;
      if (st->datagrams) {
        write_next_datagram(st);
        continue;
      }
      const auto take = std::min(st->pending.size(), wire::max_data_payload);
      const bool last = take == st->pending.size();
      const bool fin = last && st->fin_pending;  // a FIN, or a MOVE in its place
      if (take == 0 && !fin) continue;
      if (take > 0 || !st->move_pending)
        wire::encode(wire::data{st->id, fin && !st->move_pending, st->pending.first(take)},
                     write_buf_);
      if (fin && st->move_pending) wire::encode(wire::move{st->id, st->move_out}, write_buf_);
      counters_.bytes_out += take;
      st->pending = st->pending.subspan(take);
      if (fin) {
        st->fin_pending = false;
        st->move_pending = false;
        st->fin_sent = true;
      }
      if (!st->pending.empty() || st->fin_pending) {
        st->scheduled = true;
        ready_.push_back(std::move(st));
      } else {
        st->send_wake.notify();  // the caller's buffer is free again
      }
    }
    if (write_buf_.empty()) continue;
    writing_ = true;
    const auto ec = co_await stream_->write(asio::buffer(write_buf_));
    writing_ = false;
    reader_wake_.notify();
    if (ec) {
      fail(make_error_code(errc::session_lost), ec.message());
      co_return;
    }
    // Keep the big buffer only while traffic flows; an idle session gives it back.
    if (write_buf_.capacity() > 4 * write_batch) write_buf_ = {};
    // A write the kernel took at once leaves the next batch ready to go: first let the
    // streams that became readable meanwhile queue their frames, so that they are in it.
    if (write_buf_.size() >= bulk_io && ready_head_ < ready_.size()) co_await yield_turn();
  }
}

asio::awaitable<void> session::flush_goaway() {
  // The write loop is the only writer now (closed_ stops inline writes); a write of its own
  // that was in flight when the violation came has finished, since we are here.
  using namespace asio::experimental::awaitable_operators;
  while (writing_) co_await writer_wake_.wait();
  asio::steady_timer deadline(executor_, violation_flush_time);
  co_await (stream_->write(asio::buffer(control_out_)) || deadline.async_wait(use_tuple));
  control_out_ = {};
  stream_->close();
}

void session::write_next_datagram(std::shared_ptr<stream_state>& st) {
  if (st->datagrams_out.empty()) return;
  auto d = std::move(st->datagrams_out.front());
  st->datagrams_out.pop_front();
  const auto frame_size = wire::header_size + d.size();
  st->datagram_bytes -= frame_size;
  st->datagram_payload -= d.size();
  datagram_queued_ -= frame_size;
  wire::encode(wire::datagram{st->id, d}, write_buf_);
  counters_.bytes_out += d.size();
  if (!st->datagrams_out.empty()) {
    st->scheduled = true;
    ready_.push_back(std::move(st));
  }
}

bool session::can_write_inline() const noexcept {
  return !closed_ && !writing_ && ready_head_ == ready_.size();
}

asio::awaitable<asio::error_code> session::write_inline(stream_state& st,
                                                        std::span<const std::byte> data) {
  // The sender writes its own frames when nobody else waits to send: no wake-up of the
  // writer loop and back, which is most of the latency of an interactive exchange. With
  // other streams waiting, send() queues instead, and the writer loop's round-robin keeps
  // the session fair.
  auto self = shared_from_this();
  writing_ = true;
  write_buf_.clear();
  std::swap(write_buf_, control_out_);  // control frames first, as in write_loop
  while (!data.empty()) {
    const auto take = std::min(data.size(), wire::max_data_payload);
    wire::encode(wire::data{st.id, false, data.first(take)}, write_buf_);
    counters_.bytes_out += take;
    data = data.subspan(take);
  }
  const auto ec = co_await stream_->write(asio::buffer(write_buf_));
  writing_ = false;
  reader_wake_.notify();
  if (closed_) {
    // The session ended during the write; the writer loop may be waiting for this write
    // to finish before it flushes a GOAWAY.
    writer_wake_.notify();
    co_return make_error_code(errc::session_lost);
  }
  if (ec) {
    fail(make_error_code(errc::session_lost), ec.message());
    co_return make_error_code(errc::session_lost);
  }
  if (write_buf_.capacity() > 4 * write_batch) write_buf_ = {};
  if (!control_out_.empty() || ready_head_ < ready_.size()) writer_wake_.notify();
  co_return asio::error_code{};
}

asio::awaitable<void> session::keepalive_loop([[maybe_unused]] std::shared_ptr<session> self) {
  const auto interval = settings_.keepalive;
  if (interval.count() <= 0) co_return;
  while (!closed_) {
    keepalive_timer_.expires_after(interval);
    co_await keepalive_timer_.async_wait(use_tuple);
    if (closed_) co_return;
    const auto silent = std::chrono::steady_clock::now() - last_receive_;
    if (silent >= 3 * interval) {
      fail(make_error_code(errc::timed_out), "no keepalive answer");
      co_return;
    }
    if (silent >= interval) send_ping(std::chrono::steady_clock::now());
  }
}

// ---- frame handling ----------------------------------------------------------------------

bool session::handle(const wire::frame& f) {
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, wire::data>) {
          return on_data(x);
        } else if constexpr (std::is_same_v<T, wire::datagram>) {
          return on_datagram(x);
        } else if constexpr (std::is_same_v<T, wire::window_update>) {
          return on_window_update(x);
        } else if constexpr (std::is_same_v<T, wire::open>) {
          return on_open(x);
        } else if constexpr (std::is_same_v<T, wire::open_result>) {
          return on_open_result(x);
        } else if constexpr (std::is_same_v<T, wire::reset>) {
          return on_reset(x);
        } else if constexpr (std::is_same_v<T, wire::ping>) {
          return on_ping(x);
        } else if constexpr (std::is_same_v<T, wire::goaway>) {
          return on_goaway(x);
        } else if constexpr (std::is_same_v<T, wire::move>) {
          return on_move(x);
        } else {
          return violation(errc::protocol_error, "handshake frame after the handshake");
        }
      },
      f);
}

bool session::on_open(const wire::open& f) {
  const bool peer_parity_ok = (f.stream_id % 2) != (next_local_id_ % 2);
  if (!peer_parity_ok || f.stream_id <= last_peer_id_)
    return violation(errc::protocol_error,
                     "OPEN with a stream id out of order (" + std::to_string(f.stream_id) + ")");
  last_peer_id_ = f.stream_id;
  auto refuse = [&](errc code) {
    ++counters_.streams_refused;
    queue(wire::open_result{f.stream_id, static_cast<std::uint8_t>(code), 0, describe(code)});
    return true;
  };
  if (!on_open_) return refuse(errc::unsupported);
  if (local_goaway_) return refuse(errc::going_away);
  if (streams_.size() >= settings_.max_streams) return refuse(errc::too_many_streams);

  // A claim of a moved stream is only for a session that offered lanes.
  if (f.resume && !lanes_) return refuse(errc::unsupported);

  auto st = std::make_shared<stream_state>(f.stream_id, new_stream_window());
  st->datagrams = f.proto == static_cast<std::uint8_t>(protocol::udp);
  st->send_credit = f.window;
  streams_.emplace(f.stream_id, st);
  ++counters_.streams_opened;
  auto t = f.resume ? target{{}, 0, protocol::tcp, wire::parse_move_token(f.device)}
                    : target{std::string(f.device), f.port, static_cast<protocol>(f.proto), {}};
  on_open_(incoming_stream(shared_from_this(), std::move(st), std::move(t)));
  return !closed_;
}

bool session::on_open_result(const wire::open_result& f) {
  const bool ours = (f.stream_id % 2) == (next_local_id_ % 2);
  if (!ours || !ever_opened(f.stream_id))
    return violation(errc::protocol_error, "OPEN_RESULT for stream " +
                                               std::to_string(f.stream_id) +
                                               ", which was never opened");
  auto it = streams_.find(f.stream_id);
  if (it == streams_.end()) return true;  // we gave up on it (timeout) and reset it
  auto& st = *it->second;
  if (st.state != stream_state::phase::opening)
    return violation(errc::protocol_error, "OPEN_RESULT for stream " +
                                               std::to_string(f.stream_id) +
                                               ", which is already open");
  if (f.code == 0) {
    st.state = stream_state::phase::open;
    st.send_credit = f.window;
    st.movable = f.movable && lanes_ && !st.datagrams;
    st.send_wake.notify();
  } else {
    it->second->refusal = printable(f.message);
    auto keep = it->second;
    streams_.erase(it);
    keep->state = stream_state::phase::done;
    keep->fail(make_error_code(open_refusal(errc_from_wire(f.code))));
  }
  return true;
}

// session_lost and going_away from open() describe this session, and callers act on them:
// they drop it and open on a fresh one. A peer that goes away says so with GOAWAY before it
// refuses opens (peer_goaway_ is set by then), and it never loses the session it answers
// on. Either code in a refusal otherwise is the peer's own trouble behind it (a server
// whose agent's session ended), and must not make a healthy session look dead.
errc session::open_refusal(errc code) const noexcept {
  if (code == errc::session_lost || (code == errc::going_away && !peer_goaway_))
    return errc::internal;
  return code;
}

bool session::on_data(const wire::data& f) {
  const auto n = f.payload.size();
  const auto idle = idle_after();
  if (!recv_window_.receive(n, last_receive_, idle))
    return violation(errc::flow_control_error, "peer exceeded the session window");
  counters_.bytes_in += f.payload.size();
  const auto on_stream = [&](const char* what) {
    return "DATA on stream " + std::to_string(f.stream_id) + what;
  };
  auto it = streams_.find(f.stream_id);
  if (it == streams_.end()) {
    if (!on_forgotten_stream(f.stream_id, "DATA")) return false;
    // A stream we reset: bytes in flight still count against the session; give them back.
    deliver_credit_session_only(n);
    return true;
  }
  auto& st = *it->second;
  if (st.state != stream_state::phase::open)
    return violation(errc::protocol_error, on_stream(" before it was accepted"));
  if (st.fin_received) return violation(errc::protocol_error, on_stream(" after FIN"));
  if (st.datagrams) return violation(errc::protocol_error, on_stream(", which is a UDP flow"));
  if (!st.recv.receive(n, last_receive_, idle))
    return violation(errc::flow_control_error, "peer exceeded a stream window");
  if (!f.payload.empty()) {
    // Append to the last chunk unless it is the one handed out to the reader.
    const bool can_append = !st.inbound.empty() &&
                            !(st.inbound.size() == 1 && st.front_handed_out) &&
                            st.inbound.back().capacity() - st.inbound.back().size() >= f.payload.size();
    if (!can_append) {
      if (st.inbound.empty()) {
        // The local side has caught up: most likely a small message on an interactive or
        // idle stream. A chunk of its own size keeps ten thousand such streams cheap; a
        // stream that falls behind gets the big chunks below.
        std::vector<std::byte> exact;
        exact.reserve(f.payload.size());
        st.inbound.push_back(std::move(exact));
      } else {
        st.inbound.push_back(take_chunk());
      }
    }
    auto& chunk = st.inbound.back();
    chunk.insert(chunk.end(), f.payload.begin(), f.payload.end());
    if (st.inbound_bytes == 0) st.unread_since = last_receive_;
    st.inbound_bytes += f.payload.size();
    if (hoarding_limit_.count() > 0 && window_used_up()) arm_hoarding_check();
  }
  if (f.fin) st.fin_received = true;
  if (received_.empty() || received_.back() != it->second) received_.push_back(it->second);
  return true;
}

bool session::on_forgotten_stream(std::uint32_t id, const char* frame) {
  const auto on_stream = [&](const char* what) {
    return std::string(frame) + " on stream " + std::to_string(id) + what;
  };
  if (!ever_opened(id))
    return violation(errc::protocol_error, on_stream(", which was never opened"));
  if (peer_finished(id)) return violation(errc::protocol_error, on_stream(" after FIN"));
  return true;
}

bool session::on_move(const wire::move& f) {
  const auto on_stream = [&](const char* what) {
    return "MOVE on stream " + std::to_string(f.stream_id) + what;
  };
  auto it = streams_.find(f.stream_id);
  if (it == streams_.end()) return on_forgotten_stream(f.stream_id, "MOVE");
  auto& st = *it->second;
  if (st.state != stream_state::phase::open)
    return violation(errc::protocol_error, on_stream(" before it was accepted"));
  if (st.fin_received) return violation(errc::protocol_error, on_stream(" after FIN"));
  if (!st.movable) return violation(errc::protocol_error, on_stream(", which may not move"));
  // Like a FIN: the reader gets what came before it, then end-of-stream (and moved_away()).
  st.fin_received = true;
  st.moved_in = f.token;
  if (received_.empty() || received_.back() != it->second) received_.push_back(it->second);
  return true;
}

bool session::on_datagram(const wire::datagram& f) {
  const auto n = f.payload.size();
  const auto idle = idle_after();
  if (!recv_window_.receive(n, last_receive_, idle))
    return violation(errc::flow_control_error, "peer exceeded the session window");
  counters_.bytes_in += n;
  const auto on_stream = [&](const char* what) {
    return "DATAGRAM on stream " + std::to_string(f.stream_id) + what;
  };
  auto it = streams_.find(f.stream_id);
  if (it == streams_.end()) {
    if (!ever_opened(f.stream_id))
      return violation(errc::protocol_error, on_stream(", which was never opened"));
    // A flow we ended: datagrams in flight still count against the session.
    deliver_credit_session_only(n);
    return true;
  }
  auto& st = *it->second;
  if (!st.datagrams) return violation(errc::protocol_error, on_stream(", which is a TCP stream"));
  if (st.state != stream_state::phase::open)
    return violation(errc::protocol_error, on_stream(" before it was accepted"));
  if (!st.recv.receive(n, last_receive_, idle))
    return violation(errc::flow_control_error, "peer exceeded a stream window");
  st.inbound_bytes += n;
  if (st.inbound.size() >= max_inbound_datagrams) {
    // The local side is behind: UDP drops rather than queues, and the credit goes back.
    ++counters_.datagrams_dropped;
    deliver_credit(st, n);
    return true;
  }
  st.inbound.emplace_back(f.payload.begin(), f.payload.end());
  if (received_.empty() || received_.back() != it->second) received_.push_back(it->second);
  return true;
}

bool session::on_window_update(const wire::window_update& f) {
  if (f.stream_id != 0 && !ever_opened(f.stream_id))
    return violation(errc::protocol_error, "WINDOW_UPDATE for stream " +
                                               std::to_string(f.stream_id) +
                                               ", which was never opened");
  if (f.stream_id == 0) {
    send_credit_ += f.increment;
    if (send_credit_ > wire::max_window)
      return violation(errc::flow_control_error, "session window above 2^31-1");
    wake_session_credit_waiters();
    return true;
  }
  auto it = streams_.find(f.stream_id);
  if (it == streams_.end()) return true;
  auto& st = *it->second;
  st.send_credit += f.increment;
  if (st.send_credit > wire::max_window)
    return violation(errc::flow_control_error, "stream window above 2^31-1");
  st.send_wake.notify();
  return true;
}

bool session::on_reset(const wire::reset& f) {
  if (!ever_opened(f.stream_id))
    return violation(errc::protocol_error, "RESET for stream " + std::to_string(f.stream_id) +
                                               ", which was never opened");
  auto it = streams_.find(f.stream_id);
  if (it == streams_.end()) return true;
  auto st = it->second;
  spdlog::debug("session {}: stream {} reset by peer: {}", peer_, f.stream_id,
                printable(f.message));
  st->fail(make_error_code(f.code == 0 ? errc::stream_reset : errc_from_wire(f.code)));
  forget(*st);
  return true;
}

bool session::on_ping(const wire::ping& f) {
  if (!f.ack) {
    queue(wire::ping{true, f.opaque});
    return true;
  }
  if (f.opaque <= last_ping_acked_ || f.opaque > last_ping_sent_)
    return violation(errc::protocol_error, "PING ACK nobody asked for");
  last_ping_acked_ = f.opaque;
  if (f.opaque == last_ping_sent_) {
    const auto sample = last_receive_ - last_ping_time_;
    if (rtt_ == rtt_.zero() || sample <= rtt_ || last_receive_ - rtt_since_ >= rtt_min_window) {
      rtt_ = sample;
      rtt_since_ = last_receive_;
    }
    rtt_measured_ = last_receive_;
  }
  return true;
}

bool session::on_goaway(const wire::goaway& f) {
  if (peer_goaway_) return true;
  spdlog::info("session {}: peer is going away: {} ({})", peer_,
               describe(errc_from_wire(f.code)), printable(f.message));
  peer_goaway_ = true;
  closed_signal_.notify();
  return true;
}

bool session::ever_opened(std::uint32_t id) const noexcept {
  const bool ours = (id % 2) == (next_local_id_ % 2);
  if (!ours) return id <= last_peer_id_;
  return id < next_local_id_ || (local_ids_exhausted_ && id == next_local_id_);
}

void session::remember_peer_finished(std::uint32_t id) {
  if (peer_finished_.size() < peer_finished_memory) {
    peer_finished_.push_back(id);
    return;
  }
  peer_finished_[peer_finished_next_] = id;
  peer_finished_next_ = (peer_finished_next_ + 1) % peer_finished_memory;
}

bool session::peer_finished(std::uint32_t id) const noexcept {
  return std::find(peer_finished_.begin(), peer_finished_.end(), id) != peer_finished_.end();
}

// ---- plumbing ----------------------------------------------------------------------------

void session::queue(const wire::frame& f) {
  if (closed_) return;  // also after a violation: the GOAWAY stays the last frame
  wire::encode(f, control_out_);
  writer_wake_.notify();
}

void session::schedule(const std::shared_ptr<stream_state>& st) {
  if (st->scheduled || closed_) return;
  st->scheduled = true;
  ready_.push_back(st);
  writer_wake_.notify();
}

void session::forget(stream_state& st) {
  // Bytes the local side never consumed still hold session credit: give it back.
  if (st.inbound_bytes) {
    const auto n = st.inbound_bytes;
    st.inbound_bytes = 0;
    deliver_credit_session_only(n);
  }
  // A chunk handed out by receive() may be in the middle of a socket write: it stays with
  // the stream until consumed() or the stream's end.
  const std::size_t keep = st.front_handed_out ? 1 : 0;
  for (std::size_t i = keep; i < st.inbound.size(); ++i) give_back_chunk(std::move(st.inbound[i]));
  st.inbound.resize(std::min(keep, st.inbound.size()));
  // Bytes and datagrams queued but not yet written will never reach the peer, so it will
  // never return their session credit: it comes back here, with credit reserved unused.
  const auto unsent = st.reserved + st.pending.size() + st.datagram_payload;
  st.pending = {};
  st.reserved = 0;
  drop_queued_datagrams(st);
  if (unsent) {
    send_credit_ += static_cast<std::int64_t>(unsent);
    wake_session_credit_waiters();
  }
  st.send_wake.notify();
  release_charge(st);
  if (st.fin_received) remember_peer_finished(st.id);
  st.state = stream_state::phase::done;
  streams_.erase(st.id);
}

void session::deliver_credit(stream_state& st, std::size_t n) {
  st.inbound_bytes -= n;
  const auto now = std::chrono::steady_clock::now();
  st.unread_since = now;  // the reader moves: what is left has waited from now
  // After the peer's FIN nothing more comes on the stream: only the session gets credit.
  if (!st.fin_received) {
    if (const auto credit = st.recv.consume(n, now, rtt_)) {
      queue(wire::window_update{st.id, credit});
      if (st.recv.can_grow()) measure_rtt_if_stale(now);
    }
  }
  if (const auto credit = recv_window_.consume(n, now, rtt_)) {
    queue(wire::window_update{0, credit});
    if (recv_window_.can_grow()) measure_rtt_if_stale(now);
  }
}

// ---- streams that hold the session's window -------------------------------------------

void session::reset_streams_holding_the_window_after(std::chrono::milliseconds limit) {
  hoarding_limit_ = limit;
}

// The peer can send less than an eighth of the window: what it was granted waits here.
bool session::window_used_up() const noexcept {
  return recv_window_.remaining() < static_cast<std::int64_t>(recv_window_.size() / 8);
}

void session::arm_hoarding_check() {
  if (hoarding_check_armed_) return;
  hoarding_check_armed_ = true;
  hoarding_timer_.expires_after(hoarding_limit_);
  hoarding_timer_.async_wait([weak = weak_from_this()](const asio::error_code& ec) {
    const auto self = weak.lock();
    if (!self) return;
    self->hoarding_check_armed_ = false;
    if (!ec && !self->closed_) self->reset_hoarding_streams();
  });
}

// Still used up a whole limit later: the streams whose bytes have waited unread as long
// are what holds it. Resetting one gives its bytes' credit back to the session (forget()).
void session::reset_hoarding_streams() {
  if (!window_used_up()) return;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<stream_state>> stuck;
  for (const auto& [id, st] : streams_)
    if (st->inbound_bytes > 0 && !st->datagrams && now - st->unread_since >= hoarding_limit_)
      stuck.push_back(st);
  const auto words = "its reader took none of its bytes in " +
                     std::to_string(hoarding_limit_.count()) +
                     " ms while they held the window of a session others share";
  for (const auto& st : stuck) {
    queue(wire::reset{st->id, static_cast<std::uint8_t>(errc::stream_reset), words});
    st->fail(make_error_code(errc::stream_reset));
    forget(*st);
  }
  // One line per check, however many streams a peer made stall.
  if (!stuck.empty())
    spdlog::info("session with {}: {} stream(s) reset (stream {} among them): {}", peer_,
                 stuck.size(), stuck.front()->id, words);
  if (window_used_up()) arm_hoarding_check();  // others may reach the limit later
}

void session::deliver_credit_session_only(std::size_t n) {
  if (const auto credit = recv_window_.consume(n, std::chrono::steady_clock::now(), rtt_))
    queue(wire::window_update{0, credit});
}

receive_window session::new_stream_window() const {
  return receive_window(settings_.stream_window, settings_.max_stream_window,
                        std::chrono::steady_clock::now());
}

void session::measure_rtt_if_stale(std::chrono::steady_clock::time_point now) {
  const bool none_out = last_ping_acked_ == last_ping_sent_;
  const bool stale = rtt_ == rtt_.zero() || now - rtt_measured_ >= rtt_max_age;
  if (none_out && stale) send_ping(now);
}

void session::send_ping(std::chrono::steady_clock::time_point now) {
  last_ping_time_ = now;
  queue(wire::ping{false, ++last_ping_sent_});
}

std::chrono::steady_clock::duration session::idle_after() const noexcept {
  return std::max<std::chrono::steady_clock::duration>(min_idle_after, 4 * rtt_);
}

std::vector<std::byte> session::take_chunk() {
  if (spare_chunks_.empty()) {
    std::vector<std::byte> c;
    c.reserve(inbound_chunk_size);
    return c;
  }
  auto c = std::move(spare_chunks_.back());
  spare_chunks_.pop_back();
  return c;
}

void session::give_back_chunk(std::vector<std::byte> c) {
  // Keeping a few spares spares malloc and page faults on every chunk of a bulk transfer;
  // keeping few means an idle session holds little.
  if (spare_chunks_.size() >= max_spare_chunks || c.capacity() != inbound_chunk_size) return;
  c.clear();
  spare_chunks_.push_back(std::move(c));
}

void session::refund_send_credit(stream_state& st, std::size_t n) {
  if (n == 0) return;
  st.send_credit += static_cast<std::int64_t>(n);
  send_credit_ += static_cast<std::int64_t>(n);
  wake_session_credit_waiters();
}

std::size_t session::queued_bytes() const noexcept {
  // write_buf_ holds the batch being written, control frames included.
  return control_out_.size() + (writing_ ? write_buf_.size() : 0) + datagram_queued_;
}

bool session::can_queue_datagram(const stream_state& st, std::size_t n) const noexcept {
  // A flow queues at most max_datagram_queue, and all flows together half the output
  // budget: datagrams are dropped before they keep TCP streams from their turn.
  const auto frame_size = wire::header_size + n;
  return st.datagram_bytes + frame_size <= max_datagram_queue &&
         datagram_queued_ + frame_size <= settings_.max_queued_bytes / 2 &&
         queued_bytes() + charged_ + frame_size <= settings_.max_queued_bytes;
}

void session::queue_datagram(const std::shared_ptr<stream_state>& st,
                             std::span<const std::byte> d) {
  const auto frame_size = wire::header_size + d.size();
  st->datagrams_out.push_back({d.begin(), d.end()});
  st->datagram_bytes += frame_size;
  st->datagram_payload += d.size();
  datagram_queued_ += frame_size;
  schedule(st);
}

void session::drop_queued_datagrams(stream_state& st) {
  datagram_queued_ -= st.datagram_bytes;
  st.datagram_bytes = 0;
  st.datagram_payload = 0;
  st.datagrams_out.clear();
}

bool session::can_charge() const noexcept {
  // One send at a time is always allowed, so a tiny budget slows a session but never
  // stops it.
  return charged_ == 0 || queued_bytes() + charged_ + max_send_size <= settings_.max_queued_bytes;
}

void session::charge(stream_state& st) {
  if (st.charged) return;
  st.charged = true;
  charged_ += max_send_size;
}

void session::release_charge(stream_state& st) {
  if (!st.charged) return;
  st.charged = false;
  charged_ -= max_send_size;
  wake_session_credit_waiters();
}

bool session::output_backlogged() const noexcept {
  return queued_bytes() >= settings_.max_queued_bytes;
}

void session::wake_session_credit_waiters() {
  if (send_credit_ <= 0 || credit_waiters_.empty()) return;
  auto waiters = std::move(credit_waiters_);
  credit_waiters_.clear();
  for (auto& w : waiters)
    if (auto st = w.lock()) st->send_wake.notify();
}

bool session::violation(errc code, std::string reason) {
  if (closed_) return false;
  // Only the GOAWAY goes out: whatever else was queued no longer matters.
  control_out_.clear();
  wire::encode(wire::goaway{last_peer_id_, static_cast<std::uint8_t>(code), reason},
               control_out_);
  goaway_then_close_ = true;
  fail(make_error_code(code), reason);
  return false;
}

void session::fail(asio::error_code why, std::string_view log_reason) {
  if (closed_) return;
  closed_ = true;
  close_reason_ = why;
  end_reason_ = log_reason;
  // Debug only: the owner of the session logs its end in its own words (the server's
  // audit line, the client's reconnect).
  if (running_)
    spdlog::debug("session {} ended: {} ({}); {} bytes in, {} bytes out", peer_, why.message(),
                  log_reason, counters_.bytes_in, counters_.bytes_out);
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, st] : streams) {
    st->state = stream_state::phase::done;
    drop_queued_datagrams(*st);
    st->fail(make_error_code(errc::session_lost));
  }
  ready_.clear();
  ready_head_ = 0;
  credit_waiters_.clear();
  writer_wake_.notify();
  reader_wake_.notify();
  closed_signal_.notify();
  keepalive_timer_.cancel();
  // After a violation the writer loop closes the stream once the GOAWAY is out.
  if (goaway_then_close_ && running_) return;
  if (orderly_close_)
    stream_->close_orderly();
  else
    stream_->close();
}

// ---- tunnel interface --------------------------------------------------------------------

asio::awaitable<std::pair<asio::error_code, std::unique_ptr<channel>>> session::open(target t) {
  using result_type = std::pair<asio::error_code, std::unique_ptr<channel>>;
  // last_open_error() speaks of the open that returned last, never of an earlier one's
  // refusal (its caller reads it before anything else can run on this executor).
  last_open_error_.clear();
  if (closed_) co_return result_type{make_error_code(errc::session_lost), nullptr};
  // At the end of its ids a session goes on with its streams but opens no more: callers
  // treat it like the peer's GOAWAY and open on a new session.
  if (peer_goaway_ || local_ids_exhausted_)
    co_return result_type{make_error_code(errc::going_away), nullptr};
  // A catalog stream names no device (docs/PROTOCOL.md); every other stream names a valid
  // one, but for the claim of a moved stream, which names its token instead.
  if (t.resume) {
    if (!lanes_ || t.proto != protocol::tcp)
      co_return result_type{make_error_code(errc::unsupported), nullptr};
  } else if (t.proto == protocol::catalog ? !t.device.empty() || t.port != 0
                                          : !wire::valid_device_id(t.device)) {
    co_return result_type{make_error_code(errc::unknown_device), nullptr};
  }

  const auto id = next_local_id_;
  if (id > std::numeric_limits<std::uint32_t>::max() - 2) {
    local_ids_exhausted_ = true;  // `id` is the last one; next_local_id_ stays on it
    closed_signal_.notify();
  } else {
    next_local_id_ += 2;
  }
  auto st = std::make_shared<stream_state>(id, new_stream_window());
  st->datagrams = t.proto == protocol::udp;
  streams_.emplace(id, st);
  const auto device = t.resume ? wire::move_token_text(*t.resume) : t.device;
  queue(wire::open{id, static_cast<std::uint8_t>(t.proto), t.resume ? std::uint16_t{0} : t.port,
                   settings_.stream_window, device, t.resume.has_value()});

  using namespace asio::experimental::awaitable_operators;
  auto self = shared_from_this();
  asio::steady_timer deadline(executor_, settings_.open_timeout);
  while (st->state == stream_state::phase::opening && !st->failure) {
    auto woke = co_await (st->send_wake.wait() ||
                          deadline.async_wait(use_tuple));
    if (woke.index() == 1) break;
  }
  last_open_error_ = st->refusal;
  if (st->failure) co_return result_type{st->failure, nullptr};
  if (st->state != stream_state::phase::open) {
    // No answer in time: tell the server we gave up, forget the stream.
    queue(wire::reset{id, static_cast<std::uint8_t>(errc::timed_out), "open timed out"});
    forget(*st);
    co_return result_type{make_error_code(errc::timed_out), nullptr};
  }
  co_return result_type{asio::error_code{}, std::make_unique<stream_channel>(self, st)};
}

asio::awaitable<asio::error_code> session::wait_closed() {
  while (!closed_ && !peer_goaway_ && !local_ids_exhausted_) co_await closed_signal_.wait();
  co_return closed_ ? close_reason_ : make_error_code(errc::going_away);
}

asio::awaitable<asio::error_code> session::wait_ended() {
  while (!closed_) co_await closed_signal_.wait();
  co_return close_reason_;
}

void session::close() {
  // Our own decision, not a failure: the peer is told so (TLS close_notify), and logs "closed
  // by the client" (or server) instead of an unexpected end.
  orderly_close_ = true;
  fail(make_error_code(errc::session_lost), "closed locally");
}

void session::goaway(errc reason, std::string_view message) {
  if (local_goaway_ || closed_) return;
  local_goaway_ = true;
  queue(wire::goaway{last_peer_id_, static_cast<std::uint8_t>(reason), message});
}

void session::terminate(errc code, std::string message) {
  // The same path as a protocol violation: the GOAWAY is the last frame, then the close.
  violation(code, std::move(message));
}

// ---- incoming_stream ---------------------------------------------------------------------

incoming_stream::incoming_stream(std::shared_ptr<session> s, std::shared_ptr<stream_state> st,
                                 mux::target t)
    : session_(std::move(s)), stream_(std::move(st)), target_(std::move(t)) {}

incoming_stream::incoming_stream(incoming_stream&&) noexcept = default;

incoming_stream::~incoming_stream() {
  if (stream_) refuse(errc::internal, "the server dropped the stream");
}

std::uint32_t incoming_stream::id() const noexcept { return stream_ ? stream_->id : 0; }

std::unique_ptr<channel> incoming_stream::accept(bool movable) {
  auto st = std::move(stream_);
  if (st->failure) return std::make_unique<stream_channel>(session_, st);  // reports it
  st->state = stream_state::phase::open;
  st->movable = movable && session_->lanes_ && !st->datagrams;
  session_->queue(
      wire::open_result{st->id, 0, session_->settings_.stream_window, "", st->movable});
  return std::make_unique<stream_channel>(session_, st);
}

void incoming_stream::refuse(errc reason, std::string_view message) {
  auto st = std::move(stream_);
  if (!st) return;
  ++session_->counters_.streams_refused;
  if (!st->failure)
    session_->queue(
        wire::open_result{st->id, static_cast<std::uint8_t>(reason), 0, message});
  session_->forget(*st);
}

}  // namespace tether::mux
