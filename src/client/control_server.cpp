#include "tether/client/control_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <list>

#include "tether/client/control_path.hpp"
#include "tether/client/control_protocol.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/printable.hpp"
#include "tether/version.hpp"

namespace tether::client {
namespace {

using asio::local::stream_protocol;
using namespace asio::experimental::awaitable_operators;

std::string line_of(const control_reply& r) {
  return format_control_reply(r) + "\n";
}

control_reply refusal(control_errc code, std::string message) {
  control_reply r;
  r.failure = {code, std::move(message)};
  return r;
}

// For a connection we will not serve: one line saying why, if the socket takes it now.
void refuse_and_close(stream_protocol::socket& sock, control_errc code, std::string message) {
  const auto line = line_of(refusal(code, std::move(message)));
  asio::error_code ignored;
  sock.non_blocking(true, ignored);
  sock.write_some(asio::buffer(line), ignored);
  sock.close(ignored);
}

// The uid of the process at the other end, as the kernel saw it connect.
std::optional<uid_t> peer_uid(stream_protocol::socket& sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return std::nullopt;
  return cred.uid;
}

}  // namespace

// Lifetime: the control_server object owns this; the accept loop and each connection keep
// it alive. stop() closes every socket, and the coroutines end on their own after that
// without touching a proxy again (stop() forgets the proxies).
struct control_server::state : std::enable_shared_from_this<state> {
  state(asio::any_io_executor ex, std::filesystem::path p, control_server_options o)
      : executor(ex), acceptor(ex), path(std::move(p)), options(o) {}

  asio::any_io_executor executor;
  stream_protocol::acceptor acceptor;
  std::filesystem::path path;
  control_server_options options;
  dev_t made_dev = 0;  // the socket file we made, so we never remove somebody else's
  ino_t made_ino = 0;
  std::vector<proxy*> proxies;
  std::list<stream_protocol::socket*> connections;
  bool started = false;
  bool stopped = false;

  void bind() {
    asio::error_code ec;
    acceptor.open(stream_protocol(), ec);
    if (!ec) {
      // Born private: no moment in which another user could connect.
      const mode_t old_mask = ::umask(0177);
      acceptor.bind(stream_protocol::endpoint(path.string()), ec);
      ::umask(old_mask);
    }
    if (!ec) ::chmod(path.c_str(), 0600);
    if (!ec) acceptor.listen(16, ec);
    if (ec)
      throw control_path_error("cannot make the control socket '" + path.string() +
                               "': " + ec.message());
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      made_dev = st.st_dev;
      made_ino = st.st_ino;
    }
  }

  void remove_file() const {
    struct stat st {};
    if (made_ino != 0 && ::lstat(path.c_str(), &st) == 0 && st.st_dev == made_dev &&
        st.st_ino == made_ino)
      ::unlink(path.c_str());
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<state> self) {
    auto& s = *self;
    while (!s.stopped) {
      auto [ec, sock] = co_await s.acceptor.async_accept(use_tuple);
      if (s.stopped || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        spdlog::warn("control socket {}: accept failed: {}", s.path.string(), ec.message());
        asio::steady_timer pause(s.executor, std::chrono::milliseconds(100));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      const auto uid = peer_uid(sock);
      if (!uid || *uid != ::geteuid()) {
        const auto who = uid ? "uid " + std::to_string(*uid) : std::string("an unknown user");
        spdlog::warn("control socket {}: refused a connection from {}", s.path.string(), who);
        refuse_and_close(sock, control_errc::forbidden,
                         "this control socket serves only uid " + std::to_string(::geteuid()));
        continue;
      }
      if (s.connections.size() >= s.options.max_connections) {
        refuse_and_close(sock, control_errc::busy,
                         std::to_string(s.options.max_connections) +
                             " control connections are open already; try again");
        continue;
      }
      asio::co_spawn(s.executor, serve(self, std::move(sock)), [](std::exception_ptr e) {
        if (e) spdlog::error("control connection failed unexpectedly");
      });
    }
  }

  // One control connection: a request line, its answer, the next line, ... One request is
  // answered before the next is read, so a peer that does not read its answers holds at
  // most one of them here.
  static asio::awaitable<void> serve(std::shared_ptr<state> self, stream_protocol::socket sock) {
    auto& s = *self;
    const auto entry = s.connections.insert(s.connections.end(), &sock);
    struct leave {
      state& s;
      std::list<stream_protocol::socket*>::iterator entry;
      ~leave() { s.connections.erase(entry); }
    } guard{s, entry};

    std::string in;  // read and not yet answered
    asio::steady_timer deadline(s.executor);
    for (;;) {
      deadline.expires_after(s.options.idle_timeout);
      auto got =
          co_await (asio::async_read_until(sock, asio::dynamic_buffer(in, max_control_request + 1),
                                           '\n', use_tuple) ||
                    deadline.async_wait(use_tuple));
      if (s.stopped) co_return;
      if (got.index() == 1) {
        spdlog::debug("control connection idle for {} s, closed",
                      s.options.idle_timeout.count() / 1000);
        co_return;
      }
      const auto [ec, n] = std::get<0>(got);
      if (ec == asio::error::not_found) {  // no newline within the bound
        auto line = line_of(
            refusal(control_errc::bad_request,
                    "request longer than " + std::to_string(max_control_request) + " bytes"));
        co_await write_line(s, sock, deadline, std::move(line));
        co_return;
      }
      if (ec) co_return;  // the peer closed: the usual end
      std::string_view request(in.data(), n - 1);
      if (!request.empty() && request.back() == '\r') request.remove_suffix(1);
      if (request.find_first_not_of(" \t") == std::string_view::npos) {
        in.erase(0, n);
        continue;  // a blank line asks nothing
      }
      // Arguments of a co_await are named first: g++ 12 destroys some temporaries that hold
      // a std::string twice there.
      std::string text(request);
      auto reply = co_await s.answer(std::move(text));
      if (s.stopped) co_return;
      in.erase(0, n);
      auto out = line_of(reply);
      if (!co_await write_line(s, sock, deadline, std::move(out))) co_return;
    }
  }

  static asio::awaitable<bool> write_line(state& s, stream_protocol::socket& sock,
                                          asio::steady_timer& deadline, std::string line) {
    deadline.expires_after(s.options.idle_timeout);
    auto wrote = co_await (asio::async_write(sock, asio::buffer(line), use_tuple) ||
                           deadline.async_wait(use_tuple));
    co_return wrote.index() == 0 && !std::get<0>(std::get<0>(wrote));
  }

  std::vector<mapping_status> all_mappings() const {
    std::vector<mapping_status> all;
    for (const auto* p : proxies) {
      auto some = p->list();
      all.insert(all.end(), std::make_move_iterator(some.begin()),
                 std::make_move_iterator(some.end()));
    }
    return all;
  }

  bool has(const proxy* p) const {
    return std::find(proxies.begin(), proxies.end(), p) != proxies.end();
  }

  // The proxy an add goes to: the one named by `server`, or the only one.
  std::pair<proxy*, mapping_failure> pick(const std::string& server) const {
    if (proxies.empty()) return {nullptr, {control_errc::shutting_down, "no proxy is running"}};
    std::string known;
    for (auto* p : proxies) {
      if (!server.empty() && p->server() == server) return {p, {}};
      known += (known.empty() ? "" : ", ") + p->server();
    }
    if (server.empty() && proxies.size() == 1) return {proxies.front(), {}};
    if (server.empty())
      return {nullptr,
              {control_errc::unknown_server,
               "this client serves several servers (" + known + "): say which with \"server\""}};
    return {nullptr,
            {control_errc::unknown_server, "no server '" + server + "' here (" + known + ")"}};
  }

  asio::awaitable<control_reply> answer(std::string line) {
    auto parsed = parse_control_request(line);
    if (!parsed) {
      spdlog::debug("control: bad request ({}): {}", parsed.message(),
                    printable(line.substr(0, 200)));
      co_return refusal(control_errc::bad_request, parsed.message());
    }
    const auto& req = *parsed;
    control_reply reply;
    reply.id = req.id;
    switch (req.op) {
      case control_op::info: {
        control_info info;
        info.pid = static_cast<long>(::getpid());
        info.version = tether::version;
        for (const auto* p : proxies) info.servers.push_back(p->server());
        info.mappings = all_mappings().size();
        reply.info = std::move(info);
        break;
      }
      case control_op::ls:
        reply.mappings = all_mappings();
        break;
      case control_op::add: {
        auto m = parse_mapping(req.spec, req.proto);
        if (!m) {
          reply.failure = {control_errc::bad_spec, m.message()};
          break;
        }
        auto [p, not_picked] = pick(req.server);
        if (!p) {
          reply.failure = std::move(not_picked);
          break;
        }
        auto added = p->add(*m, req.name);
        if (added.failure) {
          reply.failure = std::move(added.failure);
          break;
        }
        if (req.check) {
          auto name = added.added.name;
          auto checked = co_await p->check(std::move(name));
          if (stopped || !has(p)) co_return refusal(control_errc::shutting_down, "shutting down");
          if (checked) {
            p->remove(added.added.name, stop_mode::cut);
            reply.failure = std::move(checked);
            break;
          }
        }
        reply.mapping = std::move(added.added);
        break;
      }
      case control_op::rm: {
        const auto which = resolve_mapping(all_mappings(), req.mapping);
        if (which.failure) {
          reply.failure = which.failure;
          break;
        }
        reply.failure = {control_errc::not_found, "no mapping named '" + which.name + "'"};
        for (auto* p : proxies) {
          auto removed = p->remove(which.name, req.now ? stop_mode::cut : stop_mode::drain);
          if (removed.failure.code == control_errc::not_found) continue;
          reply.failure = std::move(removed.failure);
          if (!reply.failure) reply.mapping = std::move(removed.removed);
          break;
        }
        break;
      }
    }
    co_return reply;
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    proxies.clear();
    asio::error_code ignored;
    acceptor.close(ignored);
    for (auto* c : connections) c->close(ignored);
  }
};

control_server::control_server(asio::any_io_executor ex, std::filesystem::path path,
                               control_server_options options)
    : state_(std::make_shared<state>(ex, std::move(path), options)) {
  state_->bind();
}

control_server::~control_server() {
  stop();
  state_->remove_file();
}

void control_server::add_proxy(proxy& p) {
  if (!state_->has(&p)) state_->proxies.push_back(&p);
}

void control_server::remove_proxy(proxy& p) {
  std::erase(state_->proxies, &p);
}

void control_server::start() {
  auto& s = *state_;
  if (s.started || s.stopped) return;
  s.started = true;
  asio::co_spawn(s.executor, state::accept_loop(state_), [](std::exception_ptr e) {
    if (e) spdlog::error("control accept loop failed unexpectedly");
  });
}

void control_server::stop() {
  state_->stop();
}

const std::filesystem::path& control_server::path() const noexcept {
  return state_->path;
}

}  // namespace tether::client
