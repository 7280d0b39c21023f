#include "tls_error.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <asio/error.hpp>
#include <cstdio>
#include <string>

#include "tether/errc.hpp"
#include "tether/transport/tls.hpp"

namespace tether::transport {
namespace detail {
namespace {

std::string openssl_reason(int code) {
  if (const char* r = ERR_reason_error_string(static_cast<unsigned long>(code))) return r;
  char buf[48];
  std::snprintf(buf, sizeof buf, "OpenSSL error 0x%08x", static_cast<unsigned>(code));
  return buf;
}

class verify_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tls.verify"; }
  std::string message(int v) const override { return X509_verify_cert_error_string(v); }
};

class openssl_category final : public std::error_category {
 public:
  explicit openssl_category(const char* name) : name_(name) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int v) const override { return openssl_reason(v); }

 private:
  const char* name_;
};

// OpenSSL 3 packs library and reason into 31 bits, so the code fits an int.
int packed(unsigned long e) {
  return static_cast<int>(e & 0x7fffffffUL);
}

}  // namespace

const std::error_category& tls_verify_category() noexcept {
  static const verify_category c;
  return c;
}
const std::error_category& tls_handshake_category() noexcept {
  static const openssl_category c("tls.handshake");
  return c;
}
const std::error_category& tls_session_category() noexcept {
  static const openssl_category c("tls");
  return c;
}

asio::error_code make_tls_error(int ssl_error, long verify_result, const asio::error_code& io_error,
                                bool in_handshake) {
  const unsigned long first = ERR_get_error();  // the earliest entry is the root cause
  ERR_clear_error();
  const auto& cat = in_handshake ? tls_handshake_category() : tls_session_category();
  const auto openssl = [&](unsigned long e) { return asio::error_code(packed(e), cat); };

  if (ssl_error == SSL_ERROR_ZERO_RETURN) return asio::error::eof;
  if (first != 0 && ERR_GET_LIB(first) == ERR_LIB_SSL &&
      ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED && verify_result != X509_V_OK) {
    return {static_cast<int>(verify_result), tls_verify_category()};
  }
  if (first != 0 && ERR_GET_LIB(first) == ERR_LIB_SYS) {
    if (io_error) return io_error;
    return {ERR_GET_REASON(first), std::system_category()};
  }
  if (first != 0) return openssl(first);
  if (io_error) return io_error;
  // SSL_ERROR_SYSCALL with an empty queue: the transport ended without close_notify.
  return openssl(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_EOF_WHILE_READING));
}

}  // namespace detail

bool is_certificate_error(const asio::error_code& ec) {
  return ec.category() == detail::tls_verify_category();
}

std::string describe_tls_error(const asio::error_code& ec) {
  if (!ec) return "ok";
  const auto& cat = ec.category();
  if (cat == detail::tls_verify_category() && ec.value() == X509_V_ERR_CERT_REJECTED)
    return "certificate verification failed: the server's public key is not the pinned one";
  if (cat == detail::tls_verify_category())
    return "certificate verification failed: " + ec.message();
  if (cat == detail::tls_handshake_category()) return "TLS handshake failed: " + ec.message();
  if (cat == detail::tls_session_category()) return "TLS error: " + ec.message();
  if (cat == asio::error::get_netdb_category() || cat == asio::error::get_addrinfo_category()) {
    return "cannot resolve host: " + ec.message();
  }
  if (ec == asio::error::timed_out) return "timed out";
  if (ec == asio::error::connection_refused) return "connection refused";
  if (ec == asio::error::connection_reset) return "connection reset by peer";
  if (ec == asio::error::eof) return "connection closed by peer";
  if (ec == asio::error::operation_aborted) return "cancelled";
  if (ec == asio::error::host_unreachable || ec == asio::error::network_unreachable) {
    return "no route to host";
  }
  return ec.message();
}

}  // namespace tether::transport
