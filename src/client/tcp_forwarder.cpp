#include "tether/client/tcp_forwarder.hpp"

#include <spdlog/spdlog.h>

#include <asio/co_spawn.hpp>
#include <asio/steady_timer.hpp>
#include <list>

#include "bulk_lane.hpp"
#include "counting_channel.hpp"
#include "tether/client/socks5.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/relay/splice.hpp"

namespace tether::client {

using asio::ip::tcp;

// Lifetime: the forwarder object owns this; the accept loop and every connection keep it
// alive through shared_ptr, so connections that drain after the mapping was removed still
// count into it and still have their buffer pool.
struct tcp_forwarder::state : std::enable_shared_from_this<state> {
  // One open connection, as stop(cut) needs it. Lives in the connection's coroutine frame.
  struct connection {
    tcp::socket* sock;
    mux::channel* ch = nullptr;  // null while its stream is being opened
    std::shared_ptr<bulk_lane::carried> moved;  // set once it moved to the bulk lane
    bool cut = false;
  };

  state(tcp::acceptor a, mapping m, std::string l, stream_opener o, target_opener t,
        std::shared_ptr<relay::buffer_pool> p, std::function<void()> on_end)
      : acceptor(std::move(a)),
        map(std::move(m)),
        local(std::move(l)),
        open(std::move(o)),
        open_target(std::move(t)),
        pool(std::move(p)),
        on_connection_end(std::move(on_end)) {}

  tcp::acceptor acceptor;
  mapping map;
  std::string local;
  stream_opener open;         // -L: the mapping's one target
  target_opener open_target;  // -D: the target each SOCKS connection asks for
  std::shared_ptr<relay::buffer_pool> pool;
  std::function<void()> on_connection_end;

  // Lanes: where streams that turn bulk move, and when they do. Null: they stay.
  std::shared_ptr<bulk_lane> lane;
  relay::move_policy policy;

  std::list<connection*> open_connections;
  std::uint64_t accepted = 0;
  byte_totals bytes;
  bool started = false;
  bool stopped = false;

  static asio::awaitable<void> accept_loop(std::shared_ptr<state> self) {
    auto& s = *self;
    while (!s.stopped) {
      auto [ec, sock] = co_await s.acceptor.async_accept(use_tuple);
      if (s.stopped || ec == asio::error::operation_aborted) co_return;
      if (ec) {  // out of descriptors, most likely: back off rather than spin
        spdlog::warn("accept on {} failed: {}", s.local, ec.message());
        asio::steady_timer pause(s.acceptor.get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      ++s.accepted;
      asio::co_spawn(s.acceptor.get_executor(), serve(self, std::move(sock)),
                     [](std::exception_ptr e) {
                       if (e) spdlog::error("connection handler failed unexpectedly");
                     });
    }
  }

  // One accepted connection. Its frame lives as long as the connection, so it keeps only
  // what the relay needs: opening the stream runs in a frame of its own that is gone once
  // the stream is open.
  static asio::awaitable<void> serve(std::shared_ptr<state> self, tcp::socket sock) {
    auto& s = *self;
    connection c{&sock};
    const auto entry = s.open_connections.insert(s.open_connections.end(), &c);
    struct leave {
      state& s;
      std::list<connection*>::iterator entry;
      ~leave() {
        s.open_connections.erase(entry);
        if (s.on_connection_end) s.on_connection_end();
      }
    } guard{s, entry};

    // Not a conditional expression: g++ 12 mishandles a co_await inside one.
    std::unique_ptr<mux::channel> ch;
    if (s.open_target)
      ch = co_await open_socks(self, sock);
    else
      ch = co_await s.open();
    if (!ch || c.cut) {
      if (s.open_target && !c.cut) {  // the SOCKS reply said why: let the client read it
        asio::error_code ignored;
        sock.shutdown(tcp::socket::shutdown_both, ignored);
        sock.close(ignored);
        co_return;
      }
      relay::abort_socket(sock);  // refused, no session, or cut: not a clean, empty transfer
      co_return;                  // a channel that did open is reset as it goes
    }
    counting_channel counted(std::move(ch), s.bytes);
    c.ch = &counted;
    auto r = co_await relay::splice(sock, counted, *s.pool, s.lane ? &s.policy : nullptr);
    c.ch = nullptr;
    if (r.moved && c.cut) relay::abort_socket(sock);
    if (r.moved && !c.cut) {
      // Bulk now: the rest goes through the bulk lane, on its thread.
      c.moved = s.lane->make_carried();
      const auto before = r;
      r = co_await s.lane->carry(c.moved, relay::detached_socket::take(sock), r.token, s.bytes);
      r.to_channel += before.to_channel;
      r.from_channel += before.from_channel;
    }
    spdlog::debug("connection on {} to {}:{} closed: {} bytes sent, {} received{}{}", s.local,
                  s.map.device, s.map.device_port, r.to_channel, r.from_channel,
                  r.error ? ", " : "", r.error ? r.error.message() : "");
  }

  // The SOCKS5 exchange of a -D connection: its target, the stream to it, and the reply
  // that says whether there is one. Null when there is not (the reply said why).
  static asio::awaitable<std::unique_ptr<mux::channel>> open_socks(std::shared_ptr<state> self,
                                                                  tcp::socket& sock) {
    auto target = co_await socks5::accept_request(sock, socks_handshake_timeout);
    if (!target) co_return nullptr;
    auto opened = co_await self->open_target(*target);
    if (!opened.ch) {
      co_await socks5::send_reply(sock, socks5::reply_for(opened.reason));
      co_return nullptr;
    }
    if (!co_await socks5::send_reply(sock, socks5::reply::succeeded)) {
      opened.ch->reset(errc::stream_reset);
      co_return nullptr;
    }
    co_return std::move(opened.ch);
  }

  void stop(stop_mode how) {
    if (!stopped) {
      stopped = true;
      asio::error_code ignored;
      acceptor.close(ignored);
    }
    if (how != stop_mode::cut) return;
    // Both ends learn at once: the device side from the RESET, the local peer from the
    // aborted socket. The relay notices either and ends the connection.
    for (auto* c : open_connections) {
      c->cut = true;
      if (c->ch) c->ch->reset(errc::stream_reset);
      relay::abort_socket(*c->sock);
      if (c->moved) lane->cut(c->moved);
    }
  }
};

tcp_forwarder::tcp_forwarder(tcp::acceptor acceptor, mapping m, std::string local,
                             stream_opener open, std::shared_ptr<relay::buffer_pool> pool,
                             std::function<void()> on_connection_end)
    : state_(std::make_shared<state>(std::move(acceptor), std::move(m), std::move(local),
                                     std::move(open), nullptr, std::move(pool),
                                     std::move(on_connection_end))) {}

tcp_forwarder::tcp_forwarder(tcp::acceptor acceptor, mapping m, std::string local,
                             target_opener open, std::shared_ptr<relay::buffer_pool> pool,
                             std::function<void()> on_connection_end)
    : state_(std::make_shared<state>(std::move(acceptor), std::move(m), std::move(local),
                                     nullptr, std::move(open), std::move(pool),
                                     std::move(on_connection_end))) {}

tcp_forwarder::~tcp_forwarder() {
  state_->stop(stop_mode::drain);
}

void tcp_forwarder::use_lane(std::shared_ptr<bulk_lane> lane) {
  auto& s = *state_;
  s.lane = std::move(lane);
  if (!s.lane) return;
  s.policy.lane_ready = [weak = std::weak_ptr<bulk_lane>(s.lane)] {
    const auto l = weak.lock();
    return l && l->ready();
  };
}

void tcp_forwarder::start() {
  auto& s = *state_;
  if (s.started || s.stopped) return;
  s.started = true;
  asio::co_spawn(s.acceptor.get_executor(), state::accept_loop(state_), [](std::exception_ptr e) {
    if (e) spdlog::error("accept loop failed unexpectedly");
  });
}

void tcp_forwarder::stop(stop_mode how) {
  state_->stop(how);
}

const mapping& tcp_forwarder::map() const noexcept {
  return state_->map;
}
const std::string& tcp_forwarder::local() const noexcept {
  return state_->local;
}
std::size_t tcp_forwarder::open_connections() const noexcept {
  return state_->open_connections.size();
}
std::uint64_t tcp_forwarder::connections_total() const noexcept {
  return state_->accepted;
}
std::uint64_t tcp_forwarder::bytes_out() const noexcept {
  return state_->bytes.out;
}
std::uint64_t tcp_forwarder::bytes_in() const noexcept {
  return state_->bytes.in;
}

}  // namespace tether::client
