#include "api_setup.hpp"

#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <filesystem>

#include "tether/api/http.hpp"
#include "tether/api/metrics.hpp"
#include "tether/api/service.hpp"
#include "tether/transport/private_dir.hpp"

namespace tether::cli {
namespace {

// The handler's frame keeps the service alive for as long as it runs.
asio::awaitable<api::http_answer> serve(std::shared_ptr<api::service> svc, api::http_request r) {
  co_return co_await svc->handle(std::move(r));
}

class running_api final : public api_runtime {
 public:
  running_api(std::shared_ptr<api::service> svc, std::unique_ptr<api::http_listener> l,
              server::api_settings running)
      : service_(std::move(svc)), listener_(std::move(l)), running_(std::move(running)) {}

  std::string url() const override {
    const auto ep = listener_->local_endpoint();
    auto a = ep.address();
    std::string host = a.is_unspecified() ? (a.is_v6() ? "::1" : "127.0.0.1") : a.to_string();
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    return std::string(running_.tls ? "https://" : "http://") + host + ":" + std::to_string(ep.port());
  }

  void reload(const server::api_settings& next, std::vector<std::string>& notes) override {
    service_->set_keys(next.keys);
    const auto& now = running_;
    const bool same = next.listen && now.listen && next.listen->text() == now.listen->text() &&
                      next.tls == now.tls && next.state_dir == now.state_dir &&
                      next.max_payload == now.max_payload && next.max_wait == now.max_wait &&
                      next.max_reply == now.max_reply &&
                      next.webhook_rate_per_minute == now.webhook_rate_per_minute &&
                      next.webhook_burst == now.webhook_burst;
    const auto at = notes.empty() ? notes.end() : notes.end() - 1;
    if (!same)
      notes.insert(at, "the HTTP API's address, state_dir and [api] bounds take effect when the "
                       "server is restarted; its keys changed now");
  }

  void close() override {
    listener_->close();
    service_->close();
  }

 private:
  std::shared_ptr<api::service> service_;
  std::unique_ptr<api::http_listener> listener_;
  server::api_settings running_;  // as at startup
};

asio::ip::tcp::endpoint resolve_bind(asio::io_context& io, const server::endpoint& where) {
  asio::ip::tcp::resolver resolver(io);
  const auto results =
      resolver.resolve(where.host, std::to_string(where.port), asio::ip::tcp::resolver::passive);
  return *results.begin();
}

}  // namespace

std::unique_ptr<api_runtime> start_api(asio::io_context& io, server::server& srv,
                                       const server::server_config& config) {
  const auto& a = config.api;
  if (!a.listen) return nullptr;
  // The message log is private: it holds what was sent to devices and what they answered.
  transport::ensure_private_dir(a.state_dir);
  auto svc = std::make_shared<api::service>(
      io.get_executor(), a,
      [&srv](server::message_request r) { return srv.deliver(std::move(r)); },
      config.connect_timeout);
  svc->set_metrics_source([&srv] { return api::server_metrics_text(srv.counters()); });
  svc->set_status_source({[&srv](const server::acl& allowed) { return srv.devices_json(allowed); },
                          [&srv](std::size_t max) { return srv.live_sessions_json(max); },
                          [&srv](const std::string& id) { return srv.has_device(id); }});
  api::http_options o;
  o.bind = resolve_bind(io, *a.listen);
  if (a.tls) o.tls = std::pair{config.cert, config.key};
  // RESTinio's own cut-off sits above what the API answers 413 for (answers.cpp).
  o.max_body = 6 * a.max_payload + 128 * 1024;
  o.max_header_bytes = a.max_header_bytes;
  o.max_headers = a.max_headers;
  o.max_connections = a.max_connections;
  o.max_connections_per_source = a.max_connections_per_source;
  o.request_timeout = a.request_timeout;
  o.idle_timeout = a.idle_timeout;
  auto listener =
      api::listen_http(io, o, [svc](api::http_request r) { return serve(svc, std::move(r)); });
  return std::make_unique<running_api>(std::move(svc), std::move(listener), a);
}

}  // namespace tether::cli
