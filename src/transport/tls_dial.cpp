// dial_tls and accept_tls: TCP connect (every resolved address in turn), TLS handshake, all
// under one deadline.

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/address.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <algorithm>
#include <functional>

#include "tether/printable.hpp"
#include "tether/transport/tls.hpp"
#include "tls_error.hpp"
#include "tls_connection.hpp"
#include "tunnel_socket.hpp"

namespace tether::transport {
namespace {

using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Runs `action` (which aborts the guarded I/O, e.g. by closing its socket) at `deadline`,
// unless destroyed first. The timer's handler owns the state, so a handler that is already
// queued when the watchdog dies finds no action and does nothing.
class watchdog {
 public:
  watchdog(const asio::any_io_executor& ex, clock::time_point deadline)
      : st_(std::make_shared<state>(ex, deadline)) {
    st_->timer.async_wait([st = st_](const asio::error_code& ec) {
      if (ec || !st->action) return;
      st->fired = true;
      auto action = std::move(st->action);
      st->action = nullptr;
      action();
    });
  }
  ~watchdog() {
    st_->action = nullptr;
    st_->timer.cancel();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  void arm(std::function<void()> action) { st_->action = std::move(action); }
  bool fired() const noexcept { return st_->fired; }

 private:
  struct state {
    state(const asio::any_io_executor& ex, clock::time_point deadline) : timer(ex, deadline) {}
    asio::steady_timer timer;
    std::function<void()> action;
    bool fired = false;
  };
  std::shared_ptr<state> st_;
};

// Name resolution bounded by `deadline`. getaddrinfo cannot be interrupted, so on timeout we
// stop waiting and let the lookup finish into state nobody reads.
asio::awaitable<std::pair<asio::error_code, std::vector<tcp::endpoint>>> resolve(
    const std::string& host, std::uint16_t port, clock::time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  asio::error_code ec;
  const auto literal = asio::ip::make_address(host, ec);
  if (!ec) co_return std::pair{asio::error_code{}, std::vector{tcp::endpoint(literal, port)}};

  struct state {
    state(const asio::any_io_executor& e, clock::time_point d) : resolver(e), wake(e, d) {}
    tcp::resolver resolver;
    asio::steady_timer wake;
    bool done = false;
    asio::error_code ec;
    std::vector<tcp::endpoint> endpoints;
  };
  auto st = std::make_shared<state>(ex, deadline);
  st->resolver.async_resolve(host, std::to_string(port),
                             [st](const asio::error_code& rec, tcp::resolver::results_type r) {
                               st->done = true;
                               st->ec = rec;
                               for (const auto& e : r) st->endpoints.push_back(e.endpoint());
                               st->wake.cancel();
                             });
  co_await st->wake.async_wait(use_tuple);
  if (!st->done) {
    st->resolver.cancel();
    const bool expired = clock::now() >= deadline;
    co_return std::pair{
        asio::error_code(expired ? asio::error::timed_out : asio::error::operation_aborted),
        std::vector<tcp::endpoint>{}};
  }
  if (!st->ec && st->endpoints.empty()) st->ec = asio::error::host_not_found;
  co_return std::pair{st->ec, std::move(st->endpoints)};
}

struct ssl_free_on_error {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};
using ssl_ptr = std::unique_ptr<SSL, ssl_free_on_error>;

// A client SSL that verifies `name` (an IP SAN for IP literals, else a DNS name, also sent
// as SNI).
ssl_ptr new_client_ssl(tls_client_context& ctx, const std::string& name, asio::error_code& ec) {
  ssl_ptr ssl(SSL_new(ctx.native_handle()));
  if (!ssl) {
    ec = asio::error::no_memory;
    return nullptr;
  }
  SSL_set_connect_state(ssl.get());
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  asio::error_code not_ip;
  asio::ip::make_address(name, not_ip);
  if (!not_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) ec = asio::error::invalid_argument;
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size()) != 1 ||
        SSL_set_tlsext_host_name(ssl.get(), name.c_str()) != 1) {
      ec = asio::error::invalid_argument;
    }
  }
  if (ec) return nullptr;
  return ssl;
}

// Low latency for interactive traffic (no Nagle, little waiting in the kernel: see
// tunnel_socket.hpp); non-blocking so reads can be tried before waiting.
asio::error_code prepare_socket(tcp::socket& s) {
  asio::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  if (!ec) s.non_blocking(true, ec);
  if (!ec) detail::limit_unsent(s);
  return ec;
}

// The names a certificate is for: its DNS and IP subject alternative names, or its subject's
// common name when it has none. For telling users which names would have matched.
std::string certificate_names(X509* cert) {
  std::string names;
  const auto add = [&names](std::string name) {
    if (!names.empty()) names += ", ";
    names += printable(name);
  };
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr,
                                                           nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
    if (n->type == GEN_DNS) {
      const auto* s = n->d.dNSName;
      add(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                      static_cast<std::size_t>(ASN1_STRING_length(s))));
    } else if (n->type == GEN_IPADD) {
      const auto* s = n->d.iPAddress;
      const auto* bytes = ASN1_STRING_get0_data(s);
      if (ASN1_STRING_length(s) == 4) {
        asio::ip::address_v4::bytes_type b;
        std::copy_n(bytes, 4, b.begin());
        add(asio::ip::address_v4(b).to_string());
      } else if (ASN1_STRING_length(s) == 16) {
        asio::ip::address_v6::bytes_type b;
        std::copy_n(bytes, 16, b.begin());
        add(asio::ip::address_v6(b).to_string());
      }
    }
  }
  GENERAL_NAMES_free(sans);
  if (names.empty()) {
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0)
      add(cn);
  }
  return names;
}

// On a host name or IP mismatch: the names the server's certificate is for (empty otherwise).
// The chain is kept on the SSL even though verification failed.
std::string names_on_mismatch(const asio::error_code& ec, SSL* ssl) {
  if (ec.category() != detail::tls_verify_category() ||
      (ec.value() != X509_V_ERR_HOSTNAME_MISMATCH && ec.value() != X509_V_ERR_IP_ADDRESS_MISMATCH))
    return {};
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  if (chain == nullptr || sk_X509_num(chain) == 0) return {};
  return certificate_names(sk_X509_value(chain, 0));
}

// Handshake on a connected socket, aborted by the watchdog at its deadline. On a name
// mismatch, `mismatch_names` (if given) gets the names the peer's certificate is for.
asio::awaitable<tls_result> secure(tcp::socket socket, ssl_ptr ssl, watchdog& wd,
                                   std::string* mismatch_names = nullptr) {
  if (auto ec = prepare_socket(socket)) co_return tls_result{ec, nullptr};
  auto conn = std::make_shared<detail::tls_connection>(std::move(socket), ssl.release());
  wd.arm([conn] { conn->close(); });
  auto ec = co_await detail::tls_connection::handshake(conn);
  if (wd.fired()) ec = asio::error::timed_out;
  wd.arm(nullptr);
  if (ec) {
    if (mismatch_names != nullptr) *mismatch_names = names_on_mismatch(ec, conn->ssl());
    conn->close();
    co_return tls_result{ec, nullptr};
  }
  detail::bound_receive_queue(conn->socket());  // the handshake measured the round trip
  co_return tls_result{asio::error_code{}, detail::make_tls_byte_stream(std::move(conn))};
}

std::string strip_brackets(std::string host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

}  // namespace

asio::awaitable<tls_result> dial_tls(tls_client_context& ctx, std::string host, std::uint16_t port,
                                     std::chrono::milliseconds timeout,
                                     std::string* mismatch_names) {
  auto ex = co_await asio::this_coro::executor;
  const auto deadline = clock::now() + timeout;
  host = strip_brackets(std::move(host));
  const std::string name =
      ctx.config().server_name.empty() ? host : strip_brackets(ctx.config().server_name);

  asio::error_code ec;
  ssl_ptr ssl = new_client_ssl(ctx, name, ec);
  if (ec) co_return tls_result{ec, nullptr};

  auto [rec, endpoints] = co_await resolve(host, port, deadline);
  if (rec) co_return tls_result{rec, nullptr};

  tcp::socket socket(ex);
  watchdog wd(ex, deadline);
  wd.arm([&socket] {
    asio::error_code ignored;
    socket.close(ignored);
  });
  asio::error_code last = asio::error::host_not_found;
  for (const auto& ep : endpoints) {
    asio::error_code ignored;
    socket.close(ignored);
    auto [cec] = co_await socket.async_connect(ep, use_tuple);
    if (wd.fired()) co_return tls_result{asio::error::timed_out, nullptr};
    last = cec;
    if (!cec) break;
  }
  if (last) co_return tls_result{last, nullptr};
  co_return co_await secure(std::move(socket), std::move(ssl), wd, mismatch_names);
}

asio::awaitable<tls_result> accept_tls(tls_server_context& ctx, tcp::socket socket,
                                       std::chrono::milliseconds timeout) {
  auto ex = socket.get_executor();
  watchdog wd(ex, clock::now() + timeout);
  ssl_ptr ssl(SSL_new(ctx.native_handle()));
  if (!ssl) co_return tls_result{asio::error::no_memory, nullptr};
  SSL_set_accept_state(ssl.get());
  co_return co_await secure(std::move(socket), std::move(ssl), wd);
}

}  // namespace tether::transport
