// GET /api/v1/devices, GET /api/v1/sessions and its live feed /api/v1/sessions/stream: what
// the server says of its devices (reachable, open streams, bytes) and of the sessions
// connected now. A key sees the devices its ACL covers; only a key with see_sessions lists
// sessions, since they name every credential and its peer's address.
#include <spdlog/spdlog.h>

#include <asio/steady_timer.hpp>

#include "answers.hpp"
#include "tether/api/service.hpp"

namespace tether::api {
namespace {

constexpr std::size_t max_listed_sessions = 1000;  // "total" says how many there are
constexpr std::size_t max_session_feeds = 64;
constexpr auto feed_every = std::chrono::seconds(1);
constexpr int heartbeat_ticks = 5;  // an unchanged list sends a heartbeat this often

http_answer raw_json(std::string body) {
  http_answer a;
  a.response.status = 200;
  a.response.body = std::move(body);
  return a;
}

http_answer no_sessions_for(const server::credential& key) {
  return error_answer(403, "forbidden",
                      "API key '" + key.name +
                          "' may not list sessions (see_sessions = true in its [[api_key]])");
}

}  // namespace

struct service::session_feed {
  session_feed(asio::any_io_executor ex, std::shared_ptr<const server::credential> k)
      : key(std::move(k)), timer(std::move(ex)) {}
  std::shared_ptr<const server::credential> key;
  std::shared_ptr<http_stream> stream;
  asio::steady_timer timer;
  std::string last;  // the list as last sent
  int quiet = 0;     // ticks since the last write
};

http_answer service::get_devices(const server::credential& key) const {
  if (!status_.devices) return error_answer(404, "not_found", "no such endpoint");
  return raw_json(status_.devices(key.allow));
}

http_answer service::get_sessions(const server::credential& key) const {
  if (!status_.sessions) return error_answer(404, "not_found", "no such endpoint");
  if (!key.see_sessions) return no_sessions_for(key);
  return raw_json(status_.sessions(max_listed_sessions));
}

// Sends the list at once, then again each second it changed, with a heartbeat between.
http_answer service::stream_sessions(std::shared_ptr<const server::credential> key) {
  if (!status_.sessions) return error_answer(404, "not_found", "no such endpoint");
  if (!key->see_sessions) return no_sessions_for(*key);
  if (closed_) return error_answer(503, "stopping", "the server is stopping");
  if (session_feeds_.size() >= max_session_feeds)
    return error_answer(503, "too_many_streams", "too many live feeds are open");
  auto feed = std::make_shared<session_feed>(executor_, std::move(key));
  return event_stream_answer([weak = weak_from_this(), feed](std::shared_ptr<http_stream> s) {
    feed->stream = std::move(s);
    auto self = weak.lock();
    if (!self || self->closed_) {
      feed->stream->close();
      return;
    }
    self->session_feeds_.push_back(feed);
    self->tick(feed);
  });
}

void service::tick(const std::shared_ptr<session_feed>& feed) {
  auto doc = status_.sessions(max_listed_sessions);
  bool ok = true;
  if (doc != feed->last) {
    ok = feed->stream->write("event: sessions\ndata: " + doc + "\n\n");
    feed->last = std::move(doc);
    feed->quiet = 0;
  } else if (++feed->quiet >= heartbeat_ticks) {
    ok = feed->stream->write(": heartbeat\n\n");
    feed->quiet = 0;
  }
  if (!ok) {
    drop(feed);
    return;
  }
  feed->timer.expires_after(feed_every);
  feed->timer.async_wait([weak = weak_from_this(), feed](const asio::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || !feed->stream) return;
    self->tick(feed);
  });
}

void service::drop(const std::shared_ptr<session_feed>& feed) {
  feed->timer.cancel();
  if (feed->stream) feed->stream->close();
  std::erase(session_feeds_, feed);
}

void service::drop_session_feeds(bool all) {
  const auto feeds = session_feeds_;
  for (const auto& feed : feeds) {
    const bool kept = !all && std::any_of(keys_.begin(), keys_.end(), [&](const auto& k) {
      return k->name == feed->key->name && k->token_sha256 == feed->key->token_sha256 &&
             k->see_sessions;
    });
    if (!kept) drop(feed);
  }
}

}  // namespace tether::api
