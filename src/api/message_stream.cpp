// GET /api/v1/messages/stream: the message log as Server-Sent Events. A new subscriber
// first gets what it missed (after Last-Event-ID or `since`), then every row as it is
// stored, with a heartbeat comment between them so that proxies and the request timeout
// keep the response open, and so that a client that left is noticed.
#include <spdlog/spdlog.h>

#include <asio/steady_timer.hpp>

#include "answers.hpp"
#include "tether/api/service.hpp"
#include "tether/api/text.hpp"

namespace tether::api {
namespace {

constexpr auto heartbeat_every = std::chrono::seconds(5);
constexpr std::size_t catch_up_pages = 10;  // of 1000: what a returning client may have missed
constexpr std::size_t catch_up_page_bytes = 4 * 1024 * 1024;  // of message data per page
constexpr std::size_t max_subscribers = 256;

std::string event_text(const stored_message& m) {
  return "id: " + std::to_string(m.id) + "\nevent: message\ndata: " +
         message_json(m).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

}  // namespace

struct service::subscriber {
  subscriber(asio::any_io_executor ex, std::shared_ptr<const server::credential> k)
      : key(std::move(k)), heartbeat(std::move(ex)) {}
  std::shared_ptr<const server::credential> key;
  message_query filter;
  std::shared_ptr<http_stream> stream;
  asio::steady_timer heartbeat;

  bool wants(const stored_message& m) const {
    if (!filter.device.empty() && m.device != filter.device) return false;
    if (!filter.topic.empty() &&
        std::find(m.topics.begin(), m.topics.end(), filter.topic) == m.topics.end())
      return false;
    const auto proto = mux::protocol_from_name(m.protocol).value_or(mux::protocol::tcp);
    return key->allow.allows(m.device, m.port, proto);
  }
};

http_answer service::stream_messages(const http_request& req,
                                     std::shared_ptr<const server::credential> key) {
  if (closed_) return error_answer(503, "stopping", "the server is stopping");
  if (subscribers_.size() >= max_subscribers)
    return error_answer(503, "too_many_streams", "too many live feeds are open");
  auto fields = parse_form(req.query);
  if (!fields) return error_answer(400, "bad_request", "the query string: " + fields.message());
  auto sub = std::make_shared<subscriber>(executor_, std::move(key));
  std::string since = req.last_event_id;
  for (const auto& [name, value] : *fields) {
    if (name == "device") sub->filter.device = value;
    else if (name == "topic") sub->filter.topic = value;
    else if (name == "since" && since.empty()) since = value;
    else if (name != "since") return error_answer(400, "bad_request", "unknown parameter");
  }
  if (since.empty()) {
    sub->filter.since = log_.last_id();  // only what comes from now on
  } else {
    try {
      sub->filter.since = std::stoll(since);
    } catch (const std::exception&) {
      return error_answer(400, "bad_request", "since / Last-Event-ID must be a message id");
    }
  }
  return event_stream_answer([weak = weak_from_this(), sub](std::shared_ptr<http_stream> s) {
    sub->stream = std::move(s);
    auto self = weak.lock();
    if (!self || self->closed_) {
      sub->stream->close();
      return;
    }
    // What was missed, in pages; then the live rows from publish().
    for (std::size_t page = 0; page < catch_up_pages && sub->stream->open(); ++page) {
      auto q = sub->filter;
      q.limit = 1000;
      q.max_bytes = catch_up_page_bytes;
      auto rows = self->log_.find(q);
      if (!rows || rows->empty()) break;
      for (const auto& m : *rows)
        if (sub->wants(m) && !sub->stream->write(event_text(m))) break;  // it has gone
      sub->filter.since = rows->back().id;
    }
    sub->stream->write(": live\n\n");
    self->subscribers_.push_back(sub);
    self->beat(sub);
  });
}

void service::beat(const std::shared_ptr<subscriber>& sub) {
  sub->heartbeat.expires_after(heartbeat_every);
  sub->heartbeat.async_wait([weak = weak_from_this(), sub](const asio::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    if (!sub->stream->write(": heartbeat\n\n")) {
      self->drop(sub);
      return;
    }
    self->beat(sub);
  });
}

void service::drop(const std::shared_ptr<subscriber>& sub) {
  sub->heartbeat.cancel();
  sub->stream->close();
  std::erase(subscribers_, sub);
}

void service::publish(const std::vector<stored_message>& rows) {
  // A write may complete inline: the list is copied before anything is written.
  const auto subs = subscribers_;
  for (const auto& sub : subs) {
    for (const auto& m : rows) {
      if (!sub->wants(m)) continue;
      if (!sub->stream->write(event_text(m))) {
        drop(sub);
        break;
      }
    }
  }
}

void service::drop_feeds_of_old_keys() {
  const auto subs = subscribers_;
  for (const auto& sub : subs) {
    const bool kept = std::any_of(keys_.begin(), keys_.end(), [&](const auto& k) {
      return k->name == sub->key->name && k->token_sha256 == sub->key->token_sha256;
    });
    if (!kept) drop(sub);
  }
  drop_session_feeds(false);
}

void service::close() {
  closed_ = true;
  const auto subs = subscribers_;
  for (const auto& sub : subs) drop(sub);
  drop_session_feeds(true);
}

}  // namespace tether::api
