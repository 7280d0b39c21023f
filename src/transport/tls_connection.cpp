#include "tls_connection.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>

#include <algorithm>
#include <utility>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cstring>
#include <limits>
#include <new>

#include "tether/errc.hpp"
#include "tls_error.hpp"

namespace tether::transport::detail {
namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Ciphertext read per syscall: large enough to amortise the syscall over many 16 KiB
// records, small enough to stay in L2.
constexpr std::size_t min_pull = 64 * 1024;
constexpr std::size_t max_pull = 256 * 1024;

// Upper bound of TLS framing per 16 KiB record (header, tag, padding), for reserving.
constexpr std::size_t record_overhead = 64;
constexpr std::size_t record_payload = 16 * 1024;

// One scratch buffer per thread for incoming ciphertext. Safe to share because it is only
// used between two suspensions: data left in it is moved out (park_input) before yielding.
std::byte* scratch() {
  thread_local std::unique_ptr<std::byte[]> buf(new std::byte[max_pull]);
  return buf.get();
}

// Send buffers are recycled per thread so that a busy connection keeps reusing warm memory
// while an idle one holds none.
class send_buffer_pool {
 public:
  std::vector<std::byte> take() {
    if (free_.empty()) return {};
    auto v = std::move(free_.back());
    free_.pop_back();
    return v;
  }
  void give(std::vector<std::byte>&& v) {
    v.clear();
    if (v.capacity() == 0 || v.capacity() > max_kept_capacity || free_.size() >= max_kept) {
      std::vector<std::byte>().swap(v);
      return;
    }
    free_.push_back(std::move(v));
  }
  static send_buffer_pool& local() {
    thread_local send_buffer_pool pool;
    return pool;
  }

 private:
  static constexpr std::size_t max_kept = 8;
  static constexpr std::size_t max_kept_capacity = 2 * 1024 * 1024;
  std::vector<std::vector<std::byte>> free_;
};

void ensure_capacity(std::vector<std::byte>& v, std::size_t extra) {
  if (v.capacity() == 0) v = send_buffer_pool::local().take();
  if (v.capacity() - v.size() < extra) v.reserve(v.size() + extra);
}

std::string format_peer(const asio::ip::tcp::socket& s) {
  asio::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  if (ec) return "?";
  const auto addr = ep.address().to_string();
  const auto port = std::to_string(ep.port());
  return ep.address().is_v6() ? "[" + addr + "]:" + port : addr + ":" + port;
}

bool cancelled(const asio::cancellation_state& cs) {
  return cs.cancelled() != asio::cancellation_type::none;
}

}  // namespace

// The BIO both directions of the SSL object go through; its data pointer is the connection.
struct bio_access {
  static tls_connection* self(BIO* b) { return static_cast<tls_connection*>(BIO_get_data(b)); }

  static int read(BIO* b, char* out, std::size_t len, std::size_t* done) {
    BIO_clear_retry_flags(b);
    auto* c = self(b);
    *done = c->bio_read(out, len);
    if (*done > 0) return 1;
    if (!c->bio_eof()) BIO_set_retry_read(b);  // no retry flag at eof: OpenSSL sees the end
    return 0;
  }

  static int write(BIO* b, const char* data, std::size_t len, std::size_t* done) {
    BIO_clear_retry_flags(b);
    try {
      self(b)->bio_write(data, len);
    } catch (const std::bad_alloc&) {
      return 0;
    }
    *done = len;
    return 1;
  }

  static long ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;  // sending is ours, after OpenSSL returns
      case BIO_CTRL_EOF:
        return self(b)->bio_eof() ? 1 : 0;
      case BIO_CTRL_PENDING:
        return static_cast<long>(self(b)->in_view_.size());
      case BIO_CTRL_WPENDING:
        return 0;
      default:
        return 0;
    }
  }

  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static BIO_METHOD* method() {
    static BIO_METHOD* m = [] {
      BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tether-tls");
      if (bm == nullptr || !BIO_meth_set_read_ex(bm, &read) || !BIO_meth_set_write_ex(bm, &write) ||
          !BIO_meth_set_ctrl(bm, &ctrl) || !BIO_meth_set_create(bm, &create)) {
        throw std::bad_alloc();
      }
      return bm;
    }();
    return m;
  }
};

tls_connection::tls_connection(asio::ip::tcp::socket socket, SSL* ssl)
    : socket_(std::move(socket)),
      ssl_(ssl),
      peer_(format_peer(socket_)),
      out_signal_(socket_.get_executor(), asio::steady_timer::time_point::max()) {
  BIO* bio = BIO_new(bio_access::method());
  if (bio == nullptr) throw std::bad_alloc();
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_.get(), bio, bio);  // one reference, used for both directions
}

tls_connection::~tls_connection() = default;

void tls_connection::close_orderly() noexcept {
  if (!closed_ && !send_active_ && !shutdown_sent_ && !in_handshake_) {
    shutdown_sent_ = true;
    ERR_clear_error();
    SSL_shutdown(ssl());  // close_notify joins what is staged
    ERR_clear_error();
    send_now_nonblocking();
  }
  close();
}

void tls_connection::close() noexcept {
  if (closed_) return;
  closed_ = true;
  asio::error_code ignored;
  socket_.close(ignored);
  out_signal_.cancel();
}

// ---- input ---------------------------------------------------------------------------------

std::size_t tls_connection::bio_read(char* out, std::size_t len) noexcept {
  const std::size_t n = std::min(len, in_view_.size());
  if (n == 0) return 0;
  std::memcpy(out, in_view_.data(), n);
  in_view_ = in_view_.subspan(n);
  return n;
}

void tls_connection::drop_input() {
  if (in_leftover_.capacity() != 0) std::vector<std::byte>().swap(in_leftover_);
  in_view_ = {};
  in_view_is_scratch_ = false;
}

asio::error_code tls_connection::pull_ciphertext(std::size_t want) {
  drop_input();
  asio::error_code ec;
  std::byte* buf = scratch();
  const std::size_t asked = std::min(want, max_pull);
  const std::size_t n = socket_.read_some(asio::buffer(buf, asked), ec);
  drained_ = !ec && n < asked;
  if (ec == asio::error::eof) {
    in_eof_ = true;  // OpenSSL decides whether that was orderly (close_notify first) or not
    return {};
  }
  if (ec) return ec;
  in_view_ = {buf, n};
  in_view_is_scratch_ = true;
  return {};
}

void tls_connection::park_input() {
  if (!in_view_is_scratch_) return;
  in_view_is_scratch_ = false;
  if (in_view_.empty()) return;
  in_leftover_.assign(in_view_.begin(), in_view_.end());
  in_view_ = in_leftover_;
}

asio::awaitable<asio::error_code> tls_connection::await_ciphertext() {
  drop_input();
  auto [ec, n] = co_await socket_.async_read_some(asio::buffer(first_in_), use_tuple);
  if (closed_) co_return asio::error::operation_aborted;
  drained_ = !ec && n < first_in_.size();
  if (ec == asio::error::eof) {
    in_eof_ = true;
    co_return asio::error_code{};
  }
  if (ec) co_return ec;  // a cancelled read took nothing
  in_view_ = {first_in_.data(), n};
  co_return asio::error_code{};
}

asio::awaitable<asio::error_code> tls_connection::fill_input(std::size_t want) {
  // The pull runs right before returning, and the caller decrypts without suspending, so
  // the scratch buffer is not shared across a suspension. After a short read the socket
  // was empty: a pull would only fail with EAGAIN.
  if (closed_) co_return asio::error::operation_aborted;
  if (!std::exchange(drained_, false)) {
    auto ec = pull_ciphertext(want);
    if (ec != asio::error::would_block && ec != asio::error::try_again) co_return ec;
  }
  co_return co_await await_ciphertext();
}

std::size_t tls_connection::decrypt(asio::mutable_buffer buf) {
  auto* p = static_cast<char*>(buf.data());
  std::size_t got = 0;
  while (got < buf.size()) {
    ERR_clear_error();
    std::size_t n = 0;
    if (SSL_read_ex(ssl_.get(), p + got, buf.size() - got, &n) == 1) {
      got += n;
      continue;
    }
    const int err = SSL_get_error(ssl_.get(), 0);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_WANT_WRITE) {
      // Cannot happen: the BIO takes all output. Treat as a bug rather than spin.
      read_error_ = make_error_code(errc::internal);
    } else {
      read_error_ = make_tls_error(err, X509_V_OK, {}, false);
    }
    break;
  }
  return got;
}

asio::awaitable<std::pair<asio::error_code, std::size_t>> tls_connection::read_some(
    std::shared_ptr<tls_connection> self, asio::mutable_buffer buf) {
  tls_connection& c = *self;
  if (buf.size() == 0) co_return std::pair{asio::error_code{}, std::size_t{0}};
  // Size a pull to the caller's buffer (plus framing), so little ciphertext is left over.
  const std::size_t want = std::clamp(buf.size() + buf.size() / 128 + 512, min_pull, max_pull);
  for (;;) {
    if (c.closed_)
      co_return std::pair{asio::error_code(asio::error::operation_aborted), std::size_t{0}};
    if (c.read_error_) co_return std::pair{c.read_error_, std::size_t{0}};
    const std::size_t got = c.decrypt(buf);
    c.park_input();
    c.start_send();  // alerts or replies OpenSSL produced while reading
    if (got > 0) co_return std::pair{asio::error_code{}, got};
    if (c.read_error_) continue;
    if (auto ec = co_await c.fill_input(want)) {
      // A cancelled wait loses nothing (no ciphertext was in flight): the next read may go
      // on. Anything else ends the read side.
      if (!c.closed_ && ec != asio::error::operation_aborted) c.read_error_ = ec;
      co_return std::pair{ec, std::size_t{0}};
    }
  }
}

// ---- output --------------------------------------------------------------------------------

void tls_connection::bio_write(const char* data, std::size_t len) {
  ensure_capacity(staged_, len);
  const auto* b = reinterpret_cast<const std::byte*>(data);
  staged_.insert(staged_.end(), b, b + len);
  produced_ += len;
}

void tls_connection::start_send() {
  if (send_active_ || staged_.empty() || closed_ || send_error_) return;
  // Most writes fit in the socket's buffer at once (the socket is non-blocking): try that
  // first, so the common case needs no trip through the event loop and flush() returns
  // without suspending. Only what the kernel did not take waits for writability.
  asio::error_code ec;
  const std::size_t n = socket_.write_some(asio::buffer(staged_), ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    send_error_ = ec;
    out_signal_.cancel();
    return;
  }
  if (!ec) {
    sent_ += n;
    if (n == staged_.size()) {
      send_buffer_pool::local().give(std::move(staged_));
      staged_ = {};
      return;
    }
    staged_.erase(staged_.begin(), staged_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  std::swap(sending_, staged_);  // staged_ becomes the (empty, capacity-less) old sending_
  send_active_ = true;
  asio::async_write(socket_, asio::buffer(sending_),
                    [self = shared_from_this()](const asio::error_code& e, std::size_t sent) {
                      self->on_sent(e, sent);
                    });
}

void tls_connection::on_sent(const asio::error_code& ec, std::size_t n) {
  send_active_ = false;
  sent_ += n;
  send_buffer_pool::local().give(std::move(sending_));
  sending_ = {};
  if (ec && !send_error_) send_error_ = ec;
  start_send();
  out_signal_.cancel();  // wake whoever waits in flush()
}

asio::awaitable<asio::error_code> tls_connection::flush() {
  const std::uint64_t target = produced_;
  start_send();
  for (;;) {
    if (sent_ >= target) co_return asio::error_code{};
    if (closed_) co_return asio::error::operation_aborted;
    if (send_error_) co_return send_error_;
    co_await out_signal_.async_wait(use_tuple);
    // The timer is only ever cancelled, so tell a wake-up from our own cancellation.
    if (cancelled(co_await asio::this_coro::cancellation_state)) {
      co_return asio::error::operation_aborted;  // what was staged still goes out
    }
  }
}

void tls_connection::send_now_nonblocking() noexcept {
  if (send_active_ || staged_.empty() || closed_) return;
  asio::error_code ignored;
  socket_.non_blocking(true, ignored);
  const std::size_t n = socket_.write_some(asio::buffer(staged_), ignored);
  staged_.erase(staged_.begin(), staged_.begin() + static_cast<std::ptrdiff_t>(n));
  sent_ += n;
}

asio::awaitable<asio::error_code> tls_connection::write(std::shared_ptr<tls_connection> self,
                                                        asio::const_buffer data) {
  tls_connection& c = *self;
  if (c.closed_) co_return asio::error::operation_aborted;
  if (c.write_error_) co_return c.write_error_;
  if (c.send_error_) co_return c.send_error_;
  if (data.size() == 0) co_return asio::error_code{};

  // One reservation for all records of this write, so the BIO never reallocates mid-way.
  ensure_capacity(c.staged_, data.size() + (data.size() / record_payload + 2) * record_overhead);
  const auto* p = static_cast<const char*>(data.data());
  std::size_t done = 0;
  while (done < data.size()) {
    ERR_clear_error();
    std::size_t n = 0;
    if (SSL_write_ex(c.ssl(), p + done, data.size() - done, &n) == 1) {
      done += n;
      continue;
    }
    const int err = SSL_get_error(c.ssl(), 0);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      // The BIO takes all output, and with renegotiation off and TLS 1.3 post-handshake
      // messages handled by SSL_read, a write never needs to read. Fail rather than spin.
      c.write_error_ = make_error_code(errc::protocol_error);
    } else {
      c.write_error_ = make_tls_error(err, X509_V_OK, {}, false);
    }
    c.start_send();  // deliver the alert, if OpenSSL produced one
    co_return c.write_error_;
  }
  co_return co_await c.flush();
}

asio::awaitable<void> tls_connection::shutdown(std::shared_ptr<tls_connection> self) {
  tls_connection& c = *self;
  if (c.closed_ || c.shutdown_sent_) co_return;
  c.shutdown_sent_ = true;
  ERR_clear_error();
  SSL_shutdown(c.ssl());  // queues close_notify; we do not wait for the peer's
  ERR_clear_error();
  if (co_await c.flush()) co_return;
  asio::error_code ignored;
  c.socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

// ---- handshake -----------------------------------------------------------------------------

asio::awaitable<asio::error_code> tls_connection::handshake(std::shared_ptr<tls_connection> self) {
  tls_connection& c = *self;
  for (;;) {
    if (c.closed_) co_return asio::error::operation_aborted;
    ERR_clear_error();
    const int r = SSL_do_handshake(c.ssl());
    if (r == 1) {
      c.in_handshake_ = false;
      c.park_input();  // the peer's first records may have come with its last flight
      co_return co_await c.flush();
    }
    const int err = SSL_get_error(c.ssl(), r);
    if (err != SSL_ERROR_WANT_READ) {
      auto ec = make_tls_error(err, SSL_get_verify_result(c.ssl()), {}, true);
      if (ec == asio::error::eof) ec = make_tls_error(SSL_ERROR_SYSCALL, X509_V_OK, {}, true);
      c.send_now_nonblocking();  // tell the peer why (alert), without waiting
      co_return ec;
    }
    c.park_input();
    // Our flight must reach the peer before we wait for its answer.
    if (auto ec = co_await c.flush()) co_return ec;
    if (auto ec = co_await c.fill_input(max_pull)) co_return ec;
  }
}

// ---- byte_stream ---------------------------------------------------------------------------

namespace {

class tls_byte_stream final : public mux::byte_stream {
 public:
  explicit tls_byte_stream(std::shared_ptr<tls_connection> c) : c_(std::move(c)) {}
  ~tls_byte_stream() override { c_->close(); }

  asio::any_io_executor get_executor() override { return c_->socket().get_executor(); }

  asio::awaitable<std::pair<asio::error_code, std::size_t>> read_some(
      asio::mutable_buffer buf) override {
    return tls_connection::read_some(c_, buf);
  }

  asio::awaitable<asio::error_code> write(asio::const_buffer data) override {
    return tls_connection::write(c_, data);
  }

  asio::awaitable<void> shutdown() override { return tls_connection::shutdown(c_); }

  void close() override { c_->close(); }

  void close_orderly() override { c_->close_orderly(); }

  std::string peer() const override { return c_->peer(); }

 private:
  std::shared_ptr<tls_connection> c_;
};

}  // namespace

std::unique_ptr<mux::byte_stream> make_tls_byte_stream(std::shared_ptr<tls_connection> c) {
  return std::make_unique<tls_byte_stream>(std::move(c));
}

}  // namespace tether::transport::detail
