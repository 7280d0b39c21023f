// Connect phase of an SSH session: TCP connect, handshake, host key check against
// known_hosts. Authentication is in ssh_auth.cpp, the running driver in ssh_session.cpp.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdlib>
#include <mutex>

#include "tether/transport/ssh.hpp"
#include "tether/transport/ssh_known_hosts.hpp"
#include "tether/transport/ssh_session.hpp"
#include "tether/transport/ssh_util.hpp"
#include "tether/version.hpp"

namespace tether::transport {
namespace detail {
namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Host key algorithms libssh2 1.10 can verify, in the order we prefer for a host we do not
// know yet (OpenSSH's order, so that a later `ssh` finds the key we record).
constexpr std::string_view hostkey_algorithms[] = {
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"};

// Known types first, so the server proves the key we hold: libssh2 would otherwise pick
// ECDSA when the server has one, and a known_hosts with only an Ed25519 line would not match.
std::string hostkey_preference(const std::vector<std::string>& known) {
  std::vector<std::string_view> order;
  for (const auto& t : known)
    if (std::find(std::begin(hostkey_algorithms), std::end(hostkey_algorithms), t) !=
        std::end(hostkey_algorithms))
      order.push_back(t);
  for (const auto t : hostkey_algorithms)
    if (std::find(order.begin(), order.end(), t) == order.end()) order.push_back(t);
  std::string pref;
  for (const auto t : order) {
    if (!pref.empty()) pref += ',';
    pref += t;
  }
  return pref;
}

std::filesystem::path known_hosts_path(const ssh_options& o) {
  if (!o.known_hosts.empty()) return o.known_hosts;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : ".") / ".ssh" / "known_hosts";
}

}  // namespace

asio::awaitable<result<std::monostate>> ssh_core::start() {
  auto self = shared_from_this();
  deadline_timer_.expires_after(opts_.connect_timeout);
  deadline_timer_.async_wait([weak = weak_from_this()](asio::error_code ec) {
    if (ec) return;
    if (auto core = weak.lock()) {
      core->deadline_passed_ = true;
      asio::error_code ignored;
      core->sock_.cancel(ignored);  // wakes whatever the connect phase waits for
    }
  });
  auto r = co_await connect_socket();
  if (r) r = co_await handshake_and_check_host();
  if (r) r = co_await authenticate();
  deadline_timer_.cancel();
  if (!r) {
    fail(make_error_code(errc::session_lost), r.message());
    co_return r;
  }
  start_running();
  co_return std::monostate{};
}

asio::awaitable<bool> ssh_core::wait_socket() {
  if (deadline_passed_) co_return false;
  const int d = libssh2_session_block_directions(s_);
  const auto what = (d & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? asio::socket_base::wait_write
                                                         : asio::socket_base::wait_read;
  auto [ec] = co_await sock_.async_wait(what, use_tuple);
  co_return !ec && !deadline_passed_;
}

asio::awaitable<result<std::monostate>> ssh_core::connect_socket() {
  const auto timed_out = [this] {
    return error{"timed out connecting (after " + std::to_string(opts_.connect_timeout.count()) +
                 " ms)"};
  };
  asio::ip::tcp::resolver resolver(ex_);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(opts_.host, std::to_string(opts_.port), use_tuple);
  if (deadline_passed_) co_return timed_out();
  if (rec) co_return error{"cannot resolve " + opts_.host + ": " + rec.message()};

  auto [cec, ep] = co_await asio::async_connect(sock_, endpoints, use_tuple);
  if (deadline_passed_) co_return timed_out();
  if (cec == asio::error::connection_refused) co_return error{"connection refused"};
  if (cec) co_return error{cec.message()};

  asio::error_code ignored;
  sock_.set_option(asio::ip::tcp::no_delay(true), ignored);  // libssh2 writes whole packets
  sock_.native_non_blocking(true, ignored);
  if (opts_.keepalive.count() > 0) {
    // A peer that stops acknowledging (gone off the network) fails the socket after four
    // keepalive intervals instead of the kernel's retransmission limit of ~15 minutes.
    const auto ms = std::max<std::int64_t>(60000, 4000 * opts_.keepalive.count());
    const unsigned int v = unsigned(std::min<std::int64_t>(ms, 0x7fffffff));
    ::setsockopt(sock_.native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof v);
  }
  co_return std::monostate{};
}

asio::awaitable<result<std::monostate>> ssh_core::handshake_and_check_host() {
  s_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, this);
  if (!s_) co_return error{"cannot create an SSH session (out of memory)"};
  libssh2_session_set_blocking(s_, 0);
  libssh2_session_callback_set(s_, LIBSSH2_CALLBACK_SEND, reinterpret_cast<void*>(&on_send));
  libssh2_session_callback_set(s_, LIBSSH2_CALLBACK_RECV, reinterpret_cast<void*>(&on_recv));
  libssh2_session_callback_set(s_, LIBSSH2_CALLBACK_DISCONNECT,
                               reinterpret_cast<void*>(&on_disconnect));
  const std::string banner = std::string("SSH-2.0-tether_") + tether::version;
  libssh2_session_banner_set(s_, banner.c_str());

  const auto kh_path = known_hosts_path(opts_);
  auto kh = known_hosts::load(kh_path);
  if (!kh) co_return error{kh.message()};
  const auto name = known_host_name(opts_.host, opts_.port);
  libssh2_session_method_pref(s_, LIBSSH2_METHOD_HOSTKEY,
                              hostkey_preference(kh->key_types_for(name)).c_str());

  const int rc =
      co_await drive([this] { return libssh2_session_handshake(s_, sock_.native_handle()); });
  if (rc != 0) {
    if (deadline_passed_ || rc == LIBSSH2_ERROR_TIMEOUT)
      co_return error{"timed out in the SSH handshake"};
    if (peer_eof_) {
      std::string m = "SSH handshake failed: connection closed by the server";
      if (!server_disconnect_.empty()) m += " (" + server_disconnect_ + ")";
      co_return error{m};
    }
    co_return error{"SSH handshake failed: " + last_error_text()};
  }

  std::size_t len = 0;
  int type = 0;
  const char* key = libssh2_session_hostkey(s_, &len, &type);
  if (!key || len == 0) co_return error{"the server sent no host key"};
  const std::string blob(key, len);
  const auto key_type = ssh_key_type_of_blob(blob);
  const auto shown = ssh_key_display_name(key_type) + " key " + ssh_fingerprint_sha256(blob);
  const auto file = kh_path.string();
  const auto verdict = kh->check(name, blob);
  const auto at_line = [&] { return file + ":" + std::to_string(verdict.entry->line); };
  const auto remove_hint = "ssh-keygen -R '" + name + "' -f " + file;

  switch (verdict.what) {
    case known_hosts::status::match:
      break;
    case known_hosts::status::revoked:
      co_return error{"host key for " + name + " (" + shown + ") is marked @revoked in " +
                      at_line() + "; refusing to connect", errc::untrusted_host};
    case known_hosts::status::changed:
      co_return error{"HOST KEY CHANGED for " + name + "! The server offered " + shown + ", but " +
                      at_line() + " holds a different " +
                      ssh_key_display_name(verdict.entry->key_type) + " key (" +
                      ssh_fingerprint_sha256(verdict.entry->key_blob) +
                      "). Someone may be intercepting the connection (man-in-the-middle), or the "
                      "server's key was replaced. Refusing to connect. If you know the key was "
                      "replaced, remove the old line (" +
                      remove_hint + ") and connect again.", errc::untrusted_host};
    case known_hosts::status::other_type:
      co_return error{"HOST KEY CHANGED for " + name + "? " + at_line() + " holds a " +
                      ssh_key_display_name(verdict.entry->key_type) +
                      " key for it, but the server offered only " + shown +
                      ". Refusing to connect. If you know the server's keys were replaced, "
                      "remove the old line (" +
                      remove_hint + ") and connect again.", errc::untrusted_host};
    case known_hosts::status::not_found: {
      if (!opts_.accept_new_host_key)
        co_return error{"host key for " + name + " is not known (" + shown +
                        "); pass --accept-new-host-key to trust it", errc::untrusted_host};
      auto added = append_known_host(kh_path, known_hosts_line(name, blob));
      if (!added) co_return error{added.message()};
      spdlog::warn("ssh: permanently added {} ({}) to {}", name, shown, file);
      break;
    }
  }
  co_return std::monostate{};
}

void ssh_core::start_running() {
  running_ = true;
  if (opts_.keepalive.count() > 0) {
    // No reply wanted: an unanswered keepalive is caught by TCP_USER_TIMEOUT, and replies
    // would only be more to read on an idle session.
    libssh2_keepalive_config(s_, 0, unsigned(opts_.keepalive.count()));
    start_keepalive();
  }
  const char* cipher = libssh2_session_methods(s_, LIBSSH2_METHOD_CRYPT_CS);
  const char* hostkey = libssh2_session_methods(s_, LIBSSH2_METHOD_HOSTKEY);
  spdlog::info("ssh {}: session up ({}, host key {})", where(), cipher ? cipher : "?",
               hostkey ? hostkey : "?");
  arm();
  // The server may have sent more after authentication (OpenSSH announces its host keys)
  // which libssh2 has not read yet; a readiness wait would not see bytes already there.
  if (!recv_blocked_) {
    drain_needed_ = true;
    schedule_poll();
  }
}

}  // namespace detail

asio::awaitable<result<std::shared_ptr<mux::tunnel>>> connect_ssh(asio::any_io_executor ex,
                                                                  ssh_options opts) {
  static std::once_flag once;
  std::call_once(once, [] { libssh2_init(0); });
  if (opts.host.empty()) co_return error{"no SSH host given"};
  if (opts.user.empty()) co_return error{"no SSH user given"};
  auto core = std::make_shared<detail::ssh_core>(ex, std::move(opts));
  auto r = co_await core->start();
  if (!r) co_return error{r.message(), r.code()};
  co_return detail::make_ssh_tunnel(std::move(core));
}

}  // namespace tether::transport
