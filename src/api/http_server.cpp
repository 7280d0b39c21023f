// The one file that includes RESTinio (about 30 s and 1 GB to compile): everything else of
// the API sees http.hpp's plain values.
//
// RESTinio runs on the io_context it is given (one of the server's workers, a single
// thread: hence noop strands). Each request is handed to the handler coroutine, spawned on
// that io_context; the request handle is kept until the answer is written. The library's
// own limits (body, URL, header fields and their count, connections) close a connection
// that passes them without an answer; the API checks what users need a status code for
// (413) itself, below those limits.

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <mutex>
#include <restinio/all.hpp>
#include <restinio/tls.hpp>
#include <unordered_map>

#include "tether/api/http.hpp"
#include "tether/transport/tls.hpp"

namespace tether::api {
namespace {

// Connections open from each address. The IP blocker counts one as it is accepted (before
// a TLS handshake, which RESTinio does not time) and refuses it past the limit; the state
// listener forgets it as it closes. So one client that holds connections open, or opens
// them faster than they time out, keeps out only itself, not everyone past max_connections.
class per_source_limit {
 public:
  explicit per_source_limit(std::size_t max) : max_(max) {}

  restinio::ip_blocker::inspection_result_t inspect(
      const restinio::ip_blocker::incoming_info_t& info) noexcept {
    const auto address = info.remote_endpoint().address();
    std::lock_guard lock(mutex_);
    auto& open = open_[address];
    if (open >= max_) {
      if (const auto now = std::chrono::steady_clock::now(); now - last_logged_ >= log_every) {
        spdlog::warn("API connection from {} refused: max_connections_per_source ({}) reached",
                     address.to_string(), max_);
        last_logged_ = now;
      }
      return restinio::ip_blocker::deny();
    }
    ++open;
    return restinio::ip_blocker::allow();
  }

  void state_changed(const restinio::connection_state::notice_t& notice) noexcept {
    if (!restinio::holds_alternative<restinio::connection_state::closed_t>(notice.cause()))
      return;
    std::lock_guard lock(mutex_);
    const auto it = open_.find(notice.remote_endpoint().address());
    if (it != open_.end() && --it->second == 0) open_.erase(it);
  }

 private:
  static constexpr std::chrono::seconds log_every{1};
  const std::size_t max_;
  std::mutex mutex_;  // RESTinio calls both from the listener's thread; cheap insurance
  std::unordered_map<asio::ip::address, std::size_t> open_;
  std::chrono::steady_clock::time_point last_logged_{};
};

template <class Base>
struct counted_traits : Base {
  static constexpr bool use_connection_count_limiter = true;
  using ip_blocker_t = per_source_limit;
  using connection_state_listener_t = per_source_limit;
};

using plain_traits = counted_traits<restinio::default_single_thread_traits_t>;
using tls_traits = counted_traits<
    restinio::single_thread_tls_traits_t<restinio::asio_timer_manager_t, restinio::null_logger_t>>;

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

http_request to_request(const restinio::request_t& req) {
  http_request r;
  const auto& h = req.header();
  r.method = h.method().c_str();
  r.path = std::string(h.path());
  r.query = std::string(h.query());
  r.authorization = h.get_field_or(restinio::http_field::authorization, "");
  r.content_type = h.get_field_or(restinio::http_field::content_type, "");
  r.last_event_id = h.get_field_or("Last-Event-ID", "");
  r.body = req.body();
  const auto& ep = req.remote_endpoint();
  r.peer = ep.address().to_string() + ":" + std::to_string(ep.port());
  return r;
}

template <class Builder>
void add_headers(Builder& b, const http_response& r) {
  b.append_header(restinio::http_field::content_type, r.content_type);
  for (const auto& [name, value] : r.headers) b.append_header(name, value);
}

restinio::http_status_line_t status_line(int status) {
  return restinio::http_status_line_t{restinio::http_status_code_t{static_cast<std::uint16_t>(status)},
                                      reason_phrase(status)};
}

// A response written in chunks (SSE). Written on the listener's thread only.
class chunked_stream final : public http_stream {
 public:
  explicit chunked_stream(restinio::response_builder_t<restinio::chunked_output_t> b)
      : builder_(std::move(b)) {}

  bool write(std::string text) override {
    if (!open_) return false;
    if (*queued_ > max_queued) {  // a client that does not read is let go, not buffered for
      close();
      return false;
    }
    const auto n = text.size();
    *queued_ += n;
    builder_.append_chunk(std::move(text));
    flush(n);
    return open_;
  }
  bool open() const override { return open_; }
  void close() override {
    if (!open_) return;
    open_ = false;
    builder_.done();
  }
  void flush(std::size_t bytes = 0) {
    // The callback may run inline, and more than once: it counts the bytes out once.
    builder_.flush([alive = alive_, queued = queued_, bytes, counted = std::make_shared<bool>(false)](
                       const restinio::asio_ns::error_code& ec) {
      if (!std::exchange(*counted, true)) *queued -= bytes;
      if (ec) *alive = false;
    });
    if (!*alive_) open_ = false;
  }

 private:
  static constexpr std::size_t max_queued = 1024 * 1024;  // written but not yet sent
  std::shared_ptr<std::size_t> queued_ = std::make_shared<std::size_t>(0);
  restinio::response_builder_t<restinio::chunked_output_t> builder_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool open_ = true;
};

void respond(const restinio::request_handle_t& req, http_answer a) {
  if (a.stream) {
    auto b = req->create_response<restinio::chunked_output_t>(status_line(a.response.status));
    add_headers(b, a.response);
    auto s = std::make_shared<chunked_stream>(std::move(b));
    s->flush();  // the head goes out now
    a.stream(std::move(s));
    return;
  }
  auto b = req->create_response(status_line(a.response.status));
  add_headers(b, a.response);
  b.set_body(std::move(a.response.body));
  b.done();
}

template <class Traits>
class listener final : public http_listener {
 public:
  listener(asio::io_context& io, const http_options& o, http_handler handler,
           std::shared_ptr<asio::ssl::context> tls) {
    restinio::server_settings_t<Traits> s;
    const auto per_source = std::make_shared<per_source_limit>(o.max_connections_per_source);
    s.ip_blocker(per_source);
    s.connection_state_listener(per_source);
    s.address(o.bind.address())
        .port(o.bind.port())
        .acceptor_post_bind_hook(
            [this](asio::ip::tcp::acceptor& a) { bound_ = a.local_endpoint(); })
        .socket_options_setter([](auto& options) {
          options.set_option(asio::ip::tcp::no_delay{true});  // else 40 ms per small answer
        })
        .read_next_http_message_timelimit(o.idle_timeout)
        .handle_request_timeout(o.request_timeout)
        .write_http_response_timelimit(o.request_timeout)
        .max_parallel_connections(o.max_connections)
        .incoming_http_msg_limits(restinio::incoming_http_msg_limits_t{}
                                      .max_url_size(o.max_header_bytes)
                                      .max_field_name_size(o.max_header_bytes)
                                      .max_field_value_size(o.max_header_bytes)
                                      .max_field_count(o.max_headers)
                                      .max_body_size(o.max_body))
        .request_handler([&io, handler = std::move(handler)](const restinio::request_handle_t& req) {
          asio::co_spawn(io, handler(to_request(*req)), [req](std::exception_ptr e, http_answer a) {
            if (e) {
              spdlog::error("API request failed unexpectedly");
              a = {};
              a.response.status = 500;
              a.response.body = R"({"error":"internal","message":"internal error"})";
            }
            respond(req, std::move(a));
          });
          return restinio::request_accepted();
        });
    if constexpr (std::is_same_v<Traits, tls_traits>) s.tls_context(std::move(tls));
    server_ = std::make_unique<restinio::http_server_t<Traits>>(restinio::external_io_context(io),
                                                                std::move(s));
    try {
      server_->open_sync();
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot listen on " + o.bind.address().to_string() + ":" +
                               std::to_string(o.bind.port()) + ": " + e.what());
    }
  }

  ~listener() override { close(); }

  asio::ip::tcp::endpoint local_endpoint() const override { return bound_; }

  void close() override {
    if (server_) server_->close_sync();
  }

 private:
  asio::ip::tcp::endpoint bound_;
  std::unique_ptr<restinio::http_server_t<Traits>> server_;
};

// The server's own TLS context (its certificate, key, versions and ciphers), shared.
std::shared_ptr<asio::ssl::context> server_tls(const std::filesystem::path& cert,
                                               const std::filesystem::path& key) {
  transport::tls_server_context loaded(cert, key);
  SSL_CTX_up_ref(loaded.native_handle());  // the asio context takes its own reference
  return std::make_shared<asio::ssl::context>(loaded.native_handle());
}

}  // namespace

std::unique_ptr<http_listener> listen_http(asio::io_context& io, const http_options& options,
                                           http_handler handler) {
  if (options.tls)
    return std::make_unique<listener<tls_traits>>(
        io, options, std::move(handler), server_tls(options.tls->first, options.tls->second));
  return std::make_unique<listener<plain_traits>>(io, options, std::move(handler), nullptr);
}

}  // namespace tether::api
