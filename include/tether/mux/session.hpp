#pragma once
// A tether session: many streams over one byte stream (docs/PROTOCOL.md), with per-stream
// and session-wide credit, round-robin scheduling, keepalive and GOAWAY.
//
// Threading: a session and its channels live on one single-threaded executor; every call
// must be made from it.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/steady_timer.hpp>

#include "tether/mux/async_signal.hpp"
#include "tether/mux/byte_buffer.hpp"
#include "tether/mux/byte_stream.hpp"
#include "tether/mux/channel.hpp"
#include "tether/mux/receive_window.hpp"
#include "tether/mux/tunnel.hpp"
#include "tether/wire/frame.hpp"

namespace tether::mux {

class session;
struct stream_state;  // src/mux/stream_state.hpp

/// The bounds of every window setting, on either side (docs/CONFIG.md).
inline constexpr std::uint32_t min_window = 64 * 1024;
inline constexpr std::uint32_t max_window = 1024 * 1024 * 1024;

struct session_settings {
  std::uint32_t stream_window = 2u << 20;    // what we let the peer send per stream at first
  std::uint32_t session_window = 16u << 20;  // ... and across all streams
  // How far a stream's window may grow while the path needs it (receive_window.hpp):
  // to about twice the bandwidth-delay product, back to stream_window after a pause. The
  // session's window grows alongside, to at most session_window_cap(): received bytes a
  // session can be made to hold stay bounded however many streams it has. stream_window
  // or less: windows stay fixed.
  std::uint32_t max_stream_window = 16u << 20;
  std::uint32_t max_streams = 10000;
  std::chrono::milliseconds keepalive{15000};
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds open_timeout{30000};  // waiting for OPEN_RESULT
  // What may wait to be written toward the peer: control frames and the batch being
  // written, plus one send buffer (max_send_size) for every stream with a send in progress.
  // Past it, streams wait for their turn to send, and the session stops reading from a
  // peer whose answers pile up (one read's worth of answers may come on top).
  std::size_t max_queued_bytes = 4u << 20;
  // Offer lanes (docs/PROTOCOL.md): the client moves streams between its sessions, the
  // server lets it. Both must offer.
  bool lanes = false;
  // The client's bulk lane says so in its HELLO: the server's logs and API tell it apart.
  bool bulk_lane = false;
};

/// The most the session's receive window grows to: twice the per-stream cap, so that one
/// stream at its cap leaves as much again to the others, or session_window if larger.
std::uint32_t session_window_cap(const session_settings& s) noexcept;

/// The most one channel send() may carry; also what the relay lends per send.
inline constexpr std::size_t max_send_size = 256 * 1024;

struct session_counters {
  std::uint64_t bytes_in = 0;   // DATA payload received
  std::uint64_t bytes_out = 0;  // DATA payload sent
  std::uint64_t streams_opened = 0;
  std::uint64_t streams_refused = 0;
  // Datagrams that arrived while their flow's reader was max_inbound_datagrams behind.
  std::uint64_t datagrams_dropped = 0;
};

/// Datagrams one flow may have waiting for its local side; past it arrivals are dropped.
inline constexpr std::size_t max_inbound_datagrams = 256;
/// Datagram bytes (frames) one flow may have waiting to be written toward the peer.
inline constexpr std::size_t max_datagram_queue = 256 * 1024;

/// A peer-opened stream waiting for the local side's decision. Exactly one of accept() or
/// refuse() should be called; dropping it unanswered refuses with errc::internal.
class incoming_stream {
 public:
  incoming_stream(incoming_stream&&) noexcept;
  incoming_stream& operator=(incoming_stream&&) = delete;
  ~incoming_stream();

  const mux::target& target() const noexcept { return target_; }
  std::uint32_t id() const noexcept;

  /// Sends OPEN_RESULT ok and returns the stream as a channel. `movable`: the client may
  /// move it to another of its sessions (only where the session has lanes).
  std::unique_ptr<channel> accept(bool movable = false);
  /// Sends OPEN_RESULT with `reason` and a message for the peer's log.
  void refuse(errc reason, std::string_view message);

 private:
  friend class session;
  incoming_stream(std::shared_ptr<session> s, std::shared_ptr<stream_state> st, mux::target t);
  std::shared_ptr<session> session_;
  std::shared_ptr<stream_state> stream_;
  mux::target target_;
};

class session final : public tunnel, public std::enable_shared_from_this<session> {
 public:
  /// Server side: decides on a HELLO. Returns errc::ok to accept; otherwise the refusal's
  /// code, with `why` (words for the peer) set or left empty for the code's description.
  using authenticator =
      std::function<errc(wire::role, std::string_view token, std::string& why)>;
  /// Called for each stream the peer opens.
  using open_handler = std::function<void(incoming_stream)>;

  static std::shared_ptr<session> make(std::unique_ptr<byte_stream> stream,
                                       session_settings settings);
  ~session() override;

  /// Client side: sends HELLO and waits for WELCOME (bounded by handshake_timeout). On
  /// refusal the error is the server's reason (errc::bad_token, ...) and `message` its words.
  /// On success the session runs until closed. `on_open` (may be empty) takes streams the
  /// server opens (agents).
  asio::awaitable<asio::error_code> start_client(std::string token, wire::role role,
                                                 open_handler on_open, std::string& message);

  /// Server side: waits for HELLO (bounded by handshake_timeout), asks `auth`, answers
  /// WELCOME or REFUSE. On success the session runs until closed.
  asio::awaitable<asio::error_code> start_server(authenticator auth, open_handler on_open);

  // tunnel
  asio::awaitable<std::pair<asio::error_code, std::unique_ptr<channel>>> open(target t) override;
  std::string last_open_error() const override { return last_open_error_; }
  /// Completes when the session can take no new streams: it ended, the peer sent GOAWAY, or
  /// its stream ids ran out.
  asio::awaitable<asio::error_code> wait_closed() override;
  /// Completes when the session has ended (a peer's GOAWAY alone does not end it), with the
  /// reason. Use either this or wait_closed(), not both: one waiter at a time.
  asio::awaitable<asio::error_code> wait_ended();
  void close() override;

  /// For a session that carries the streams of many others (an agent's, on the server): a
  /// stream whose received bytes have waited unread for `limit` while the session's receive
  /// window is used up is reset, with words saying so. Its reader has stopped (a client that
  /// does not read what its device sends), and every other stream of the session waits
  /// behind the window it holds. Zero (the default): never.
  void reset_streams_holding_the_window_after(std::chrono::milliseconds limit);

  /// Announces graceful shutdown: no new streams; open ones continue until they end.
  void goaway(errc reason, std::string_view message);

  /// Ends the session now, telling the peer why: GOAWAY with `code` and `message` goes out
  /// (given a second at most), then the connection closes and every stream fails.
  void terminate(errc code, std::string message);

  /// Once ended: how, in words for a log ("closed by the client", "no keepalive answer",
  /// "closed locally", a read error).
  const std::string& end_reason() const noexcept { return end_reason_; }

  /// After start_server() refused the peer: the words it was sent, for the server's log.
  const std::string& refusal() const noexcept { return refusal_; }

  /// Bytes waiting to be written toward the peer or being written now (control frames and
  /// the DATA of the batch in flight); with the send buffers of streams that are sending,
  /// bounded by max_queued_bytes.
  std::size_t queued_bytes() const noexcept;

  std::size_t stream_count() const noexcept;
  const session_counters& counters() const noexcept { return counters_; }
  std::string peer() const;
  bool closed() const noexcept;
  /// Both peers offered lanes: streams accepted movable may move (docs/PROTOCOL.md).
  bool lanes() const noexcept { return lanes_; }
  /// Server side: the peer's HELLO said this session is its bulk lane.
  bool peer_bulk_lane() const noexcept { return peer_bulk_lane_; }

 private:
  friend class incoming_stream;
  friend class stream_channel;

  session(std::unique_ptr<byte_stream> stream, session_settings settings);

  // Loops, each spawned once with a strong reference to the session.
  asio::awaitable<void> read_loop(std::shared_ptr<session> self);
  asio::awaitable<void> write_loop(std::shared_ptr<session> self);
  asio::awaitable<void> keepalive_loop(std::shared_ptr<session> self);
  void start_loops();

  // Reads until one whole frame is buffered; used during the handshake.
  asio::awaitable<std::pair<asio::error_code, wire::frame>> read_first_frame();
  // read_first_frame bounded by handshake_timeout; closes the stream when it fails.
  asio::awaitable<std::pair<asio::error_code, wire::frame>> read_handshake_frame();
  void drop_handshake_frame();  // after the first frame has been used
  // Sends REFUSE (bounded in time), closes, and returns `code` as the handshake's outcome.
  asio::awaitable<asio::error_code> refuse_hello(errc code, std::string why);
  std::size_t handshake_consumed_ = 0;
  std::string first_frame_error_;  // the decoder's words for a malformed first frame
  std::string refusal_;            // what start_server() told a refused peer
  // Handles one frame; false ends the session (fail() has been called).
  bool handle(const wire::frame& f);
  bool on_open(const wire::open& f);
  bool on_open_result(const wire::open_result& f);
  errc open_refusal(errc code) const noexcept;  // what a peer's refusal of an open means here
  bool on_data(const wire::data& f);
  bool on_datagram(const wire::datagram& f);
  bool on_window_update(const wire::window_update& f);
  bool on_reset(const wire::reset& f);
  bool on_ping(const wire::ping& f);
  bool on_goaway(const wire::goaway& f);
  bool on_move(const wire::move& f);
  // DATA or MOVE (`frame`) on a stream no longer in the table: in flight when we reset it
  // (true), unless it was never opened or the peer had finished it, a violation (false).
  bool on_forgotten_stream(std::uint32_t id, const char* frame);

  // True if `id` was opened in this session by either side (it may be forgotten since).
  bool ever_opened(std::uint32_t id) const noexcept;
  // Streams forgotten after the peer's FIN, so that DATA on them is seen as the protocol
  // error it is (a stream forgotten after a RESET may still see DATA that was in flight).
  void remember_peer_finished(std::uint32_t id);
  bool peer_finished(std::uint32_t id) const noexcept;

  // Ends the session: every stream fails with `why`, the byte stream closes.
  void fail(asio::error_code why, std::string_view log_reason);
  // The peer broke the protocol: GOAWAY with `code` and `reason` goes out (bounded in time),
  // then the session ends as fail() does. Returns false, for handlers to return.
  bool violation(errc code, std::string reason);

  // Stream plumbing used by stream_channel and incoming_stream.
  void queue(const wire::frame& f);
  void schedule(const std::shared_ptr<stream_state>& st);  // it has DATA or FIN to send
  bool can_write_inline() const noexcept;                  // nothing queued, nobody writing
  void write_next_datagram(std::shared_ptr<stream_state>& st);  // one per round-robin turn
  asio::awaitable<asio::error_code> write_inline(stream_state& st,
                                                 std::span<const std::byte> data);
  void forget(stream_state& st);                           // drop from the table, credit back
  void deliver_credit(stream_state& st, std::size_t n);    // local side consumed n bytes
  void deliver_credit_session_only(std::size_t n);         // n bytes no stream will consume
  receive_window new_stream_window() const;
  // Window growth needs the round trip: a PING measures it when none is out and the last
  // measurement is old (or missing). Keepalive PINGs measure it too.
  void measure_rtt_if_stale(std::chrono::steady_clock::time_point now);
  void send_ping(std::chrono::steady_clock::time_point now);
  std::chrono::steady_clock::duration idle_after() const noexcept;
  std::vector<std::byte> take_chunk();  // for received DATA, from spares when there are some
  void give_back_chunk(std::vector<std::byte> chunk);
  void refund_send_credit(stream_state& st, std::size_t n);
  // Datagrams: whether one of `n` bytes fits in the output budget now, and queueing it.
  bool can_queue_datagram(const stream_state& st, std::size_t n) const noexcept;
  void queue_datagram(const std::shared_ptr<stream_state>& st, std::span<const std::byte> d);
  void drop_queued_datagrams(stream_state& st);
  void wake_session_credit_waiters();
  // Send buffers held toward the peer (see max_queued_bytes): taken by wait_send_credit(),
  // released when the send completes.
  bool can_charge() const noexcept;
  void charge(stream_state& st);
  void release_charge(stream_state& st);
  bool output_backlogged() const noexcept;  // stop reading: the peer does not read

  std::unique_ptr<byte_stream> stream_;
  asio::any_io_executor executor_;
  session_settings settings_;
  session_counters counters_;
  std::string peer_;

  std::unordered_map<std::uint32_t, std::shared_ptr<stream_state>> streams_;
  std::uint32_t next_local_id_ = 1;
  std::uint32_t last_peer_id_ = 0;
  std::string last_open_error_;
  open_handler on_open_;

  // Sending. Control frames go first, then DATA round-robin over ready streams.
  std::vector<std::byte> control_out_;
  std::vector<std::byte> write_buf_;
  std::vector<std::shared_ptr<stream_state>> ready_;  // FIFO: ready_head_ is the next turn
  std::size_t ready_head_ = 0;
  async_signal writer_wake_;
  bool writing_ = false;  // a write to stream_ is in flight (write_loop or write_inline)
  std::size_t charged_ = 0;    // send buffers held, max_send_size each
  std::size_t datagram_queued_ = 0;  // the datagram_bytes of every stream
  async_signal reader_wake_;   // the output backlog shrank: the read loop may read again
  bool goaway_then_close_ = false;  // a violation: flush control frames, then close
  bool orderly_close_ = false;      // close() was called: end with close_notify
  asio::awaitable<void> flush_goaway();

  // Receiving.
  byte_buffer read_buf_;
  std::size_t read_have_ = 0;
  std::size_t last_read_ = 0;  // bytes the last read brought
  std::vector<std::vector<std::byte>> spare_chunks_;
  // Streams that got DATA in the batch being decoded. Their readers are woken in place once
  // the batch is handled, not through a post: that saved turn of the event loop is a
  // system call per message.
  std::vector<std::shared_ptr<stream_state>> received_;
  std::chrono::steady_clock::time_point last_receive_;
  std::vector<std::uint32_t> peer_finished_;  // ring of recent ids, see remember_peer_finished
  std::size_t peer_finished_next_ = 0;
  std::uint64_t last_ping_sent_ = 0;   // PING opaque values are 1, 2, ...
  std::uint64_t last_ping_acked_ = 0;
  std::chrono::steady_clock::time_point last_ping_time_;  // when last_ping_sent_ went out
  // The round trip without queues: the least measurement of the last 10 s, as BBR takes
  // the bandwidth-delay product from the minimum. The latest alone would count the time a
  // PING waited behind bulk, and grow windows on a path that is not long.
  std::chrono::steady_clock::duration rtt_{};             // 0: none yet
  std::chrono::steady_clock::time_point rtt_since_;       // when rtt_ was measured
  std::chrono::steady_clock::time_point rtt_measured_;    // the latest measurement

  // Credit. send_credit_: what the peer still lets us send on the session.
  std::int64_t send_credit_ = 0;
  receive_window recv_window_;  // what the peer may still send us on the session
  std::vector<std::weak_ptr<stream_state>> credit_waiters_;
  std::uint32_t peer_stream_window_ = 0;

  bool lanes_ = false;
  bool peer_bulk_lane_ = false;
  bool running_ = false;
  bool closed_ = false;
  bool local_goaway_ = false;
  bool peer_goaway_ = false;
  bool local_ids_exhausted_ = false;  // the last stream id of our side is used
  asio::error_code close_reason_;
  std::string end_reason_;
  async_signal closed_signal_;
  asio::steady_timer keepalive_timer_;

  // See reset_streams_holding_the_window_after().
  std::chrono::milliseconds hoarding_limit_{0};
  asio::steady_timer hoarding_timer_;
  bool hoarding_check_armed_ = false;
  bool window_used_up() const noexcept;
  void arm_hoarding_check();
  void reset_hoarding_streams();
};

}  // namespace tether::mux
