#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <memory>

#include "tether/client/dialer.hpp"
#include "tether/printable.hpp"
#include "tether/transport/tls.hpp"

namespace tether::client {
namespace {

// What the peer sent first in a dial's TLS handshake: when the handshake fails, it tells a
// server that is not a TLS server at all (an sshd, a plain HTTP server) from one whose TLS
// went wrong. One per dialer: its dials run one after another.
struct first_reply {
  bool hello_sent = false;  // our ClientHello went out: the handshake had begun
  std::string bytes;        // the first bytes read back, at most max_kept
  static constexpr std::size_t max_kept = 48;
};

// BIO callback: keeps what the connection's first successful read returned, then removes
// itself, so that an established session pays nothing for it.
long keep_first_read(BIO* b, int oper, const char* data, std::size_t, int, long, int ret,
                     std::size_t* processed) {
  if (oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0 && processed && *processed > 0) {
    auto* reply = reinterpret_cast<first_reply*>(BIO_get_callback_arg(b));
    reply->bytes.assign(data, std::min(*processed, first_reply::max_kept));
    BIO_set_callback_ex(b, nullptr);
  }
  return ret;
}

// Message callback of the dialer's SSL_CTX: at a connection's first message (our
// ClientHello, before anything is read) it starts watching the reads, and then leaves the
// connection alone (a session's records pass no callback).
void watch_reply(int, int, int, const void*, std::size_t, SSL* ssl, void* arg) {
  SSL_set_msg_callback(ssl, nullptr);
  auto* reply = static_cast<first_reply*>(arg);
  reply->hello_sent = true;
  if (BIO* rbio = SSL_get_rbio(ssl)) {
    BIO_set_callback_arg(rbio, reinterpret_cast<char*>(reply));
    BIO_set_callback_ex(rbio, keep_first_read);
  }
}

// A TLS record starts with a content type from 20 to 24 and major version 3.
bool looks_like_tls(const std::string& bytes) {
  const auto type = static_cast<unsigned char>(bytes[0]);
  return type >= 20 && type <= 24 && (bytes.size() < 2 || bytes[1] == 3);
}

// A failed handshake, when what the peer did says more than OpenSSL's reason: it answered
// with something that is not TLS, or hung up on our ClientHello. Sets `out` and returns true.
bool explain_handshake(const first_reply& reply, const asio::error_code& ec, dial_outcome& out) {
  if (!reply.hello_sent || transport::is_certificate_error(ec)) return false;
  if (!reply.bytes.empty()) {
    if (looks_like_tls(reply.bytes)) return false;
    const bool cut = reply.bytes.size() == first_reply::max_kept;
    out.error = "is not a TLS server (it sent '" + printable(reply.bytes) + (cut ? "...')" : "')");
  } else if (ec == asio::error::timed_out || ec == asio::error::operation_aborted) {
    return false;
  } else if (ec == asio::error::connection_reset) {
    out.error = "reset the connection during the TLS handshake (not a tether server?)";
  } else {
    out.error = "closed the connection during the TLS handshake (not a tether server?)";
  }
  out.answered = true;
  return true;
}

// The TLS handshake went through but HELLO failed without a tether answer (a refusal would
// have come with the server's words): what is there is a TLS server, likely not a tether
// server. `ec` is the failure; an error of the connection (not of tether's) means the peer
// ended it, with or without TLS's close_notify.
void explain_hello(const asio::error_code& ec, dial_outcome& out) {
  if (ec == make_error_code(errc::protocol_error) || ec == make_error_code(errc::frame_too_large))
    out.error =
        "completed the TLS handshake but does not speak tether's protocol (its answer "
        "to the hello is not a tether frame)";
  else if (ec == make_error_code(errc::timed_out))
    out.error =
        "completed the TLS handshake but did not answer tether's hello in time (not a "
        "tether server?)";
  else if (ec.category() != tether_category() && ec != asio::error::operation_aborted)
    out.error =
        "completed the TLS handshake but closed the connection instead of answering "
        "tether's hello (not a tether server?)";
  else
    return;
  out.answered = true;
}

}  // namespace

dialer make_tls_dialer(asio::any_io_executor, tls_dial_options options) {
  auto ctx = std::make_shared<transport::tls_client_context>(
      transport::tls_client_config{options.ca_file, options.host, options.pin});
  auto reply = std::make_shared<first_reply>();
  SSL_CTX_set_msg_callback(ctx->native_handle(), watch_reply);
  SSL_CTX_set_msg_callback_arg(ctx->native_handle(), reply.get());
  auto opts = std::make_shared<tls_dial_options>(std::move(options));
  return [ctx, reply, opts]() -> asio::awaitable<dial_outcome> {
    dial_outcome out;
    std::string cert_names;
    *reply = first_reply{};
    auto [ec, stream] = co_await transport::dial_tls(*ctx, opts->host, opts->port,
                                                     opts->connect_timeout, &cert_names);
    if (ec) {
      out.error = transport::describe_tls_error(ec);
      if (!cert_names.empty())
        out.error = "the server certificate is for " + cert_names + ", not " + opts->host;
      out.kind = transport::is_certificate_error(ec) ? dial_outcome::failure::untrusted_server
                                                     : dial_outcome::failure::transient;
      explain_handshake(*reply, ec, out);
      co_return out;
    }
    auto session = mux::session::make(std::move(stream), opts->session);
    std::string message;
    if (auto sec =
            co_await session->start_client(opts->token, opts->role, opts->on_open, message)) {
      out.error = message.empty() ? sec.message() : message;
      // forbidden: a token used in the wrong role (an agent's as a client, or the reverse).
      if (sec == make_error_code(errc::bad_token) || sec == make_error_code(errc::forbidden))
        out.kind = dial_outcome::failure::bad_credentials;
      else if (sec == make_error_code(errc::version_mismatch))
        out.kind = dial_outcome::failure::fatal;
      else
        out.kind = dial_outcome::failure::transient;
      if (message.empty()) explain_hello(sec, out);
      co_return out;
    }
    out.tunnel = std::move(session);
    co_return out;
  };
}

}  // namespace tether::client
