#include <memory>

#include "tether/client/dialer.hpp"
#include "tether/transport/tls.hpp"

namespace tether::client {

dialer make_tls_dialer(asio::any_io_executor, tls_dial_options options) {
  auto ctx = std::make_shared<transport::tls_client_context>(
      transport::tls_client_config{options.ca_file, options.host, options.pin});
  auto opts = std::make_shared<tls_dial_options>(std::move(options));
  return [ctx, opts]() -> asio::awaitable<dial_outcome> {
    dial_outcome out;
    std::string cert_names;
    auto [ec, stream] = co_await transport::dial_tls(*ctx, opts->host, opts->port,
                                                     opts->connect_timeout, &cert_names);
    if (ec) {
      out.error = transport::describe_tls_error(ec);
      if (!cert_names.empty())
        out.error = "the server certificate is for " + cert_names + ", not " + opts->host;
      out.kind = transport::is_certificate_error(ec) ? dial_outcome::failure::untrusted_server
                                                     : dial_outcome::failure::transient;
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
      co_return out;
    }
    out.tunnel = std::move(session);
    co_return out;
  };
}

}  // namespace tether::client
