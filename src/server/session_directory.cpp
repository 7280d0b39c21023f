#include "tether/server/session_directory.hpp"

#include <nlohmann/json.hpp>

namespace tether::server {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;

std::int64_t epoch_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

using meters = std::array<traffic_meter, mux::protocol_count>;

// Forwards to the stream it wraps, counting bytes on the way: received from the client is
// toward the device, sent to the client is from it.
class metered final : public mux::channel {
 public:
  metered(std::unique_ptr<mux::channel> inner, std::size_t proto,
          std::shared_ptr<session_entry> session, std::shared_ptr<meters> device, bool resumed)
      : inner_(std::move(inner)), proto_(proto), session_(std::move(session)),
        device_(std::move(device)) {
    each([](traffic_meter& m) { m.streams_open.fetch_add(1, relaxed); });
    if (session_) session_->by_protocol[proto_].streams_opened.fetch_add(1, relaxed);
    if (device_ && !resumed) (*device_)[proto_].streams_opened.fetch_add(1, relaxed);
  }
  ~metered() override {
    each([](traffic_meter& m) { m.streams_open.fetch_sub(1, relaxed); });
  }

  asio::awaitable<std::pair<asio::error_code, std::size_t>> wait_send_credit() override {
    return inner_->wait_send_credit();
  }
  asio::awaitable<asio::error_code> send(std::span<const std::byte> data) override {
    const auto n = data.size();
    const auto ec = co_await inner_->send(data);
    if (!ec) from_device(n);
    co_return ec;
  }
  asio::awaitable<asio::error_code> send_eof() override { return inner_->send_eof(); }
  asio::awaitable<std::pair<asio::error_code, std::span<const std::byte>>> receive() override {
    auto r = co_await inner_->receive();
    if (!r.first) to_device(r.second.size());
    co_return r;
  }
  std::pair<asio::error_code, std::span<const std::byte>> try_receive() override {
    auto r = inner_->try_receive();
    if (!r.first) to_device(r.second.size());
    return r;
  }
  void when_receivable(std::function<void()> wake) override {
    inner_->when_receivable(std::move(wake));
  }
  void consumed(std::size_t n) override { inner_->consumed(n); }
  mux::datagram_status try_send_datagram(std::span<const std::byte> datagram) override {
    const auto s = inner_->try_send_datagram(datagram);
    if (s == mux::datagram_status::sent) from_device(datagram.size());
    return s;
  }
  bool can_move() const noexcept override { return inner_->can_move(); }
  asio::awaitable<asio::error_code> send_move(const wire::move_token& token) override {
    return inner_->send_move(token);
  }
  std::optional<wire::move_token> moved_away() const override { return inner_->moved_away(); }
  void reset(errc reason) override { inner_->reset(reason); }
  asio::error_code error() const noexcept override { return inner_->error(); }

 private:
  template <class F>
  void each(F f) {
    if (session_) f(session_->by_protocol[proto_]);
    if (device_) f((*device_)[proto_]);
  }
  void to_device(std::size_t n) {
    if (n == 0) return;
    each([n](traffic_meter& m) { m.bytes_to_device.fetch_add(n, relaxed); });
  }
  void from_device(std::size_t n) {
    if (n == 0) return;
    each([n](traffic_meter& m) { m.bytes_from_device.fetch_add(n, relaxed); });
  }

  std::unique_ptr<mux::channel> inner_;
  std::size_t proto_;
  std::shared_ptr<session_entry> session_;
  std::shared_ptr<meters> device_;
};

}  // namespace

traffic_snapshot& traffic_snapshot::operator+=(const traffic_snapshot& o) noexcept {
  streams_open += o.streams_open;
  streams_opened += o.streams_opened;
  bytes_to_device += o.bytes_to_device;
  bytes_from_device += o.bytes_from_device;
  return *this;
}

traffic_snapshot read_meter(const traffic_meter& m) noexcept {
  return {m.streams_open.load(relaxed), m.streams_opened.load(relaxed),
          m.bytes_to_device.load(relaxed), m.bytes_from_device.load(relaxed)};
}

std::shared_ptr<session_entry> session_directory::add(std::string credential, std::string peer,
                                                      std::string agent_for, bool bulk_lane) {
  auto e = std::make_shared<session_entry>();
  e->bulk_lane = bulk_lane;
  e->credential = std::move(credential);
  e->peer = std::move(peer);
  e->agent_for = std::move(agent_for);
  e->since = std::chrono::system_clock::now();
  std::lock_guard lock(mutex_);
  e->id = next_id_++;
  sessions_.emplace(e->id, e);
  return e;
}

void session_directory::remove(const std::shared_ptr<session_entry>& entry) {
  if (!entry) return;
  std::lock_guard lock(mutex_);
  sessions_.erase(entry->id);
}

std::size_t session_directory::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

std::vector<session_snapshot> session_directory::snapshot(std::size_t max,
                                                          std::size_t* total) const {
  std::vector<std::shared_ptr<session_entry>> listed;
  {
    std::lock_guard lock(mutex_);
    if (total) *total = sessions_.size();
    for (const auto& [id, e] : sessions_) {
      if (listed.size() >= max) break;
      listed.push_back(e);
    }
  }
  // The meters are read outside the lock: the entries are kept alive by `listed`.
  std::vector<session_snapshot> out;
  out.reserve(listed.size());
  for (const auto& e : listed) {
    session_snapshot s{e->id, e->credential, e->peer, e->agent_for, e->bulk_lane, e->since, {}};
    for (std::size_t p = 0; p < mux::protocol_count; ++p)
      s.by_protocol[p] = read_meter(e->by_protocol[p]);
    out.push_back(std::move(s));
  }
  return out;
}

traffic_snapshot device_snapshot::total() const noexcept {
  traffic_snapshot t;
  for (const auto& p : by_protocol) t += p;
  return t;
}

device_activity::entry& device_activity::entry_of(std::string_view device) {
  auto it = devices_.find(device);
  if (it == devices_.end()) {
    if (devices_.size() >= max_devices)
      std::erase_if(devices_, [](const auto& kv) { return kv.second.meters.use_count() == 1; });
    it = devices_.emplace(std::string(device), entry{}).first;
  }
  return it->second;
}

std::shared_ptr<meters> device_activity::meter(std::string_view device) {
  std::lock_guard lock(mutex_);
  return entry_of(device).meters;
}

void device_activity::dialed(std::string_view device, dial_result result) {
  std::lock_guard lock(mutex_);
  entry_of(device).last_dial = std::move(result);
}

device_snapshot device_activity::find(std::string_view device) const {
  device_snapshot s;
  std::shared_ptr<meters> m;
  {
    std::lock_guard lock(mutex_);
    const auto it = devices_.find(device);
    if (it == devices_.end()) return s;
    m = it->second.meters;
    s.last_dial = it->second.last_dial;
  }
  for (std::size_t p = 0; p < mux::protocol_count; ++p) s.by_protocol[p] = read_meter((*m)[p]);
  return s;
}

std::unique_ptr<mux::channel> metered_channel(std::unique_ptr<mux::channel> inner,
                                              mux::protocol proto,
                                              std::shared_ptr<session_entry> session,
                                              std::shared_ptr<meters> device, bool resumed) {
  const auto p = static_cast<std::size_t>(proto);
  if (p >= mux::protocol_count || (!session && !device)) return inner;
  return std::make_unique<metered>(std::move(inner), p, std::move(session), std::move(device),
                                   resumed);
}

std::string sessions_json(const std::vector<session_snapshot>& sessions, std::size_t total) {
  auto list = nlohmann::ordered_json::array();
  for (const auto& s : sessions) {
    nlohmann::ordered_json j{{"id", s.id},
                             {"credential", s.credential},
                             {"peer", s.peer},
                             {"role", s.agent_for.empty() ? "client" : "agent"}};
    if (!s.agent_for.empty()) j["device"] = s.agent_for;
    if (s.agent_for.empty()) j["bulk_lane"] = s.bulk_lane;
    j["since_ms"] = epoch_ms(s.since);
    traffic_snapshot all;
    auto by = nlohmann::ordered_json::object();
    for (std::size_t p = 0; p < mux::protocol_count; ++p) {
      const auto& t = s.by_protocol[p];
      all += t;
      by[mux::protocol_name(static_cast<mux::protocol>(p))] = {
          {"streams_open", t.streams_open},
          {"streams_opened", t.streams_opened},
          {"bytes_to_devices", t.bytes_to_device},
          {"bytes_from_devices", t.bytes_from_device}};
    }
    j["streams_open"] = all.streams_open;
    j["streams_opened"] = all.streams_opened;
    j["bytes_to_devices"] = all.bytes_to_device;
    j["bytes_from_devices"] = all.bytes_from_device;
    j["by_protocol"] = std::move(by);
    list.push_back(std::move(j));
  }
  return nlohmann::ordered_json{{"sessions", std::move(list)}, {"total", total}}.dump();
}

}  // namespace tether::server
