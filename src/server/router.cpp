#include "tether/server/router.hpp"

#include "tether/server/catalog.hpp"

#include "agent_upstream.hpp"
#include "tcp_upstream.hpp"
#include "udp_upstream.hpp"

namespace tether::server {

router::router(asio::any_io_executor ex, std::shared_ptr<const registry> devices,
               relay::buffer_pool& pool, route_settings settings)
    : executor_(std::move(ex)), devices_(std::move(devices)), pool_(pool), settings_(settings) {}

void router::update(std::shared_ptr<const registry> devices, route_settings settings) {
  devices_ = std::move(devices);
  settings_ = settings;
}

result<std::unique_ptr<upstream>> router::route(const mux::target& t,
                                                const credential& cred) const {
  // Every credential may ask what it may reach; the answer is filtered by its own ACL.
  if (t.proto == mux::protocol::catalog)
    return make_catalog_upstream(catalog_json(*devices_, cred.allow, agents_));
  const bool udp = t.proto == mux::protocol::udp;
  if (!cred.allow.allows(t.device, t.port, t.proto))
    return error{"credential '" + cred.name + "' may not reach " + t.device + ":" +
                     std::to_string(t.port) + (udp ? "/udp" : "/tcp"),
                 errc::forbidden};
  const device* dev = devices_->find(t.device);
  if (!dev)
    return error{"no device '" + t.device + "' in the server's registry", errc::unknown_device};
  if (dev->agent) return route_to_agent(t);
  if (udp)
    return std::unique_ptr<upstream>(std::make_unique<udp_upstream>(
        executor_, *dev, t.port, settings_.connect_timeout, settings_.udp_idle, pool_));
  return std::unique_ptr<upstream>(
      std::make_unique<tcp_upstream>(executor_, *dev, t.port, settings_.connect_timeout, pool_,
                                     activity_));
}

bool router::is_agent_device(std::string_view id) const {
  const device* dev = devices_->find(id);
  return dev && dev->agent;
}

result<std::unique_ptr<upstream>> router::route_to_agent(const mux::target& t) const {
  auto found = agents_ ? agents_->find(t.device) : agent_directory::lookup{};
  if (!found.online)
    return error{offline_message(t.device, found.last_seen, std::chrono::system_clock::now()),
                 errc::unreachable};
  return std::unique_ptr<upstream>(
      std::make_unique<agent_upstream>(executor_, std::move(found.online), t));
}

}  // namespace tether::server
