#include <memory>

#include "tether/client/dialer.hpp"

namespace tether::client {

dialer make_ssh_dialer(asio::any_io_executor ex, transport::ssh_options options) {
  auto opts = std::make_shared<transport::ssh_options>(std::move(options));
  return [ex, opts]() -> asio::awaitable<dial_outcome> {
    dial_outcome out;
    auto r = co_await transport::connect_ssh(ex, *opts);
    if (r) {
      out.tunnel = std::move(r.value());
      co_return out;
    }
    out.error = r.message();
    switch (r.code()) {
      case errc::bad_token: out.kind = dial_outcome::failure::bad_credentials; break;
      case errc::untrusted_host: out.kind = dial_outcome::failure::untrusted_server; break;
      default: out.kind = dial_outcome::failure::transient; break;
    }
    co_return out;
  };
}

}  // namespace tether::client
