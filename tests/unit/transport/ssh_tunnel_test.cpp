// The SSH transport against a real OpenSSH sshd on loopback: data through direct-tcpip
// channels, half-close both ways, host key checking, authentication and refusals.

#include <gtest/gtest.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <cstring>

#include "ssh_test_env.hpp"
#include "tether/transport/ssh.hpp"

namespace tether::transport {
namespace {

using namespace tether::test;
using namespace asio::experimental::awaitable_operators;

ssh_keys* keys = nullptr;
sshd* sshd_server = nullptr;

class SshTunnelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    keys = new ssh_keys();
    sshd_server = new sshd(*keys);
  }
  static void TearDownTestSuite() {
    delete sshd_server;
    delete keys;
    sshd_server = nullptr;
    keys = nullptr;
  }

  // Options for the suite's sshd with a known_hosts holding its Ed25519 key.
  ssh_options options(const sshd& d = *sshd_server) {
    ssh_options o;
    o.host = "127.0.0.1";
    o.port = d.port();
    o.user = current_user();
    o.identity_files = {keys->user_ed25519};
    o.known_hosts = dir_.path() / "known_hosts";
    if (!fs::exists(o.known_hosts))
      write_text(o.known_hosts, d.known_hosts_line(keys->host_ed25519));
    o.connect_timeout = 10s;
    return o;
  }

  // Runs `body` on io_ until it finishes, failing the test after `limit`.
  template <class F>
  void run(F body, std::chrono::seconds limit = 60s) {
    bool done = false;
    std::exception_ptr error;
    asio::co_spawn(io_, body(), [&](std::exception_ptr e) {
      done = true;
      error = e;
      io_.stop();
    });
    io_.restart();
    io_.run_for(limit);
    ASSERT_TRUE(done) << "test body did not finish in time";
    if (error) std::rethrow_exception(error);
  }

  // Connects, expecting success.
  asio::awaitable<std::shared_ptr<mux::tunnel>> connect(ssh_options o) {
    auto r = co_await connect_ssh(io_.get_executor(), std::move(o));
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.message());
    co_return r.ok() ? r.value() : nullptr;
  }

  // Connects, expecting failure; returns the message.
  asio::awaitable<std::string> connect_error(ssh_options o) {
    auto r = co_await connect_ssh(io_.get_executor(), std::move(o));
    EXPECT_FALSE(r.ok());
    if (r.ok()) {
      r.value()->close();
      co_return std::string();
    }
    co_return r.message();
  }

  temp_dir dir_;
  asio::io_context io_;
};

// Opens a channel to 127.0.0.1:port. The target is built outside the co_await expression:
// g++ 12 miscompiles a braced aggregate temporary (with a std::string) inside co_await.
asio::awaitable<std::pair<asio::error_code, std::unique_ptr<mux::channel>>> open_to(
    mux::tunnel& tunnel, std::uint16_t port, mux::protocol proto = mux::protocol::tcp) {
  const mux::target t{"127.0.0.1", port, proto};
  return tunnel.open(t);
}

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = std::byte(x);
  }
  return v;
}

asio::awaitable<asio::error_code> send_all(mux::channel& ch, std::span<const std::byte> data) {
  std::size_t off = 0;
  while (off < data.size()) {
    auto [ec, credit] = co_await ch.wait_send_credit();
    if (ec) co_return ec;
    const auto n = std::min(credit, data.size() - off);
    if (auto e = co_await ch.send(data.subspan(off, n))) co_return e;
    off += n;
  }
  co_return asio::error_code{};
}

// Reads until EOF (or `limit` bytes, a guard against a runaway peer).
asio::awaitable<std::pair<asio::error_code, std::vector<std::byte>>> receive_all(
    mux::channel& ch, std::size_t limit) {
  std::vector<std::byte> got;
  for (;;) {
    auto [ec, span] = co_await ch.receive();
    if (ec) co_return std::pair{ec, std::move(got)};
    if (span.empty()) break;
    got.insert(got.end(), span.begin(), span.end());
    ch.consumed(span.size());
    if (got.size() > limit) break;
  }
  co_return std::pair{asio::error_code{}, std::move(got)};
}

// Sends `data` then EOF, while reading the echo until EOF; returns what came back.
asio::awaitable<std::vector<std::byte>> echo_through(mux::channel& ch,
                                                     const std::vector<std::byte>& data) {
  auto send_then_eof = [&]() -> asio::awaitable<asio::error_code> {
    if (auto ec = co_await send_all(ch, data)) co_return ec;
    co_return co_await ch.send_eof();
  };
  auto [sec, received] = co_await (send_then_eof() && receive_all(ch, data.size() + 1));
  EXPECT_FALSE(sec) << sec.message();
  EXPECT_FALSE(received.first) << received.first.message();
  co_return std::move(received.second);
}

TEST_F(SshTunnelTest, SixteenMebibytesEachWayArriveIntact) {
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    EXPECT_FALSE(ec) << ec.message();
    if (!ch) co_return;
    const auto data = pattern(16 << 20, 1);
    const auto back = co_await echo_through(*ch, data);
    EXPECT_EQ(back.size(), data.size());
    EXPECT_TRUE(back == data);
    ch.reset();
    tunnel->close();
  });
  EXPECT_EQ(echo.eofs_seen, 1);
}

TEST_F(SshTunnelTest, HundredConcurrentChannelsEchoOneMebibyteEach) {
  echo_server echo(io_);
  run(
      [&]() -> asio::awaitable<void> {
        auto tunnel = co_await connect(options());
        if (!tunnel) co_return;
        int ok = 0;
        auto one = [&](std::uint32_t i) -> asio::awaitable<void> {
          auto [ec, ch] = co_await open_to(*tunnel, echo.port());
          EXPECT_FALSE(ec) << "channel " << i << ": " << ec.message();
          if (!ch) co_return;
          const auto data = pattern(1 << 20, 100 + i);
          const auto back = co_await echo_through(*ch, data);
          if (back == data) ++ok;
        };
        int finished = 0;
        auto ex = co_await asio::this_coro::executor;
        asio::steady_timer all_done(ex, std::chrono::steady_clock::time_point::max());
        for (std::uint32_t i = 0; i < 100; ++i)
          asio::co_spawn(ex, one(i), [&](std::exception_ptr) {
            if (++finished == 100) all_done.cancel();
          });
        co_await all_done.async_wait(use_tuple);
        EXPECT_EQ(ok, 100);
        tunnel->close();
      },
      120s);
}

TEST_F(SshTunnelTest, SendEofReachesTheDeviceAndItsEchoEndsWithEof) {
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    if (!ch) co_return;
    const std::string hello = "hello over ssh";
    const auto bytes = std::as_bytes(std::span(hello));
    EXPECT_FALSE(co_await send_all(*ch, bytes));
    EXPECT_FALSE(co_await ch->send_eof());
    auto [rec, got] = co_await receive_all(*ch, 1024);
    EXPECT_FALSE(rec);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), hello);
    // After EOF, receive keeps saying EOF, and sending is refused.
    auto [rec2, span2] = co_await ch->receive();
    EXPECT_FALSE(rec2);
    EXPECT_TRUE(span2.empty());
    EXPECT_EQ(co_await ch->send(bytes), asio::error::shut_down);
    tunnel->close();
  });
  EXPECT_EQ(echo.eofs_seen, 1);
}

TEST_F(SshTunnelTest, DeviceHalfCloseGivesEofWhileSendingStillWorks) {
  half_closing_server device(io_, "greetings from the device");
  const auto data = pattern(1 << 20, 7);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, device.port());
    if (!ch) co_return;
    auto [rec, got] = co_await receive_all(*ch, 1024);
    EXPECT_FALSE(rec);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()),
              "greetings from the device");
    EXPECT_FALSE(co_await send_all(*ch, data));
    EXPECT_FALSE(co_await ch->send_eof());
    // Wait (bounded) until the device has read everything and our EOF.
    asio::steady_timer t(co_await asio::this_coro::executor);
    for (int i = 0; i < 1000 && !device.saw_eof; ++i) {
      t.expires_after(10ms);
      co_await t.async_wait(use_tuple);
    }
    tunnel->close();
  });
  EXPECT_TRUE(device.saw_eof);
  EXPECT_EQ(device.received, data.size());
}

TEST_F(SshTunnelTest, OpenToAClosedPortIsRefused) {
  const auto closed_port = free_loopback_port();
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, closed_port);
    EXPECT_EQ(ec, make_error_code(errc::refused)) << ec.message();
    EXPECT_EQ(ch, nullptr);
    EXPECT_NE(tunnel->last_open_error().find("connect failed"), std::string::npos)
        << tunnel->last_open_error();
    // The session is still fine afterwards.
    echo_server echo(io_);
    auto [ec2, ch2] = co_await open_to(*tunnel, echo.port());
    EXPECT_FALSE(ec2);
    tunnel->close();
  });
}

TEST_F(SshTunnelTest, UdpIsNotSupported) {
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, 53, mux::protocol::udp);
    EXPECT_EQ(ec, make_error_code(errc::unsupported));
    tunnel->close();
  });
}

TEST_F(SshTunnelTest, ForwardingDisabledOnTheServerIsForwardingDenied) {
  sshd no_forwarding(*keys, "AllowTcpForwarding no");
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options(no_forwarding));
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    EXPECT_EQ(ec, make_error_code(errc::ssh_forwarding_denied)) << ec.message();
    EXPECT_NE(tunnel->last_open_error().find("administratively prohibited"),
              std::string::npos)
        << tunnel->last_open_error();
    tunnel->close();
  });
}

TEST_F(SshTunnelTest, PermitOpenThatDoesNotMatchIsForwardingDenied) {
  sshd restricted(*keys, "PermitOpen 127.0.0.1:1");
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options(restricted));
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    EXPECT_EQ(ec, make_error_code(errc::ssh_forwarding_denied)) << ec.message();
    tunnel->close();
  });
}

TEST_F(SshTunnelTest, UnknownHostKeyIsRefusedWithItsFingerprint) {
  auto o = options();
  write_text(o.known_hosts, "");
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    const auto expected = "host key for [127.0.0.1]:" + std::to_string(sshd_server->port()) +
                          " is not known (ED25519 key " +
                          ssh_keys::fingerprint(keys->host_ed25519) +
                          "); pass --accept-new-host-key to trust it";
    EXPECT_EQ(msg, expected);
  });
  EXPECT_EQ(read_text(o.known_hosts), "");
}

TEST_F(SshTunnelTest, AcceptNewRecordsTheKeyAndTheNextConnectNeedsNoFlag) {
  auto o = options();
  o.known_hosts = dir_.path() / "sub" / "known_hosts";  // created with its directory
  o.accept_new_host_key = true;
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (tunnel) tunnel->close();
    auto again = o;
    again.accept_new_host_key = false;
    auto second = co_await connect(again);
    if (second) second->close();
  });
  EXPECT_EQ(read_text(o.known_hosts), sshd_server->known_hosts_line(keys->host_ed25519));
}

TEST_F(SshTunnelTest, AnEcdsaLineAloneAlsoMatches) {
  // The server has both; whichever type known_hosts holds must be the one negotiated.
  auto o = options();
  write_text(o.known_hosts,
             "# only ECDSA here\n" + sshd_server->known_hosts_line(keys->host_ecdsa));
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (tunnel) tunnel->close();
  });
}

TEST_F(SshTunnelTest, HashedKnownHostsEntriesMatch) {
  auto o = options();
  write_text(o.known_hosts, sshd_server->known_hosts_line(keys->host_ed25519));
  ASSERT_EQ(tether::test::run({"ssh-keygen", "-q", "-H", "-f", o.known_hosts.string()}), 0);
  ASSERT_EQ(read_text(o.known_hosts).rfind("|1|", 0), 0u);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (tunnel) tunnel->close();
  });
}

TEST_F(SshTunnelTest, ChangedHostKeyIsRefusedLoudly) {
  auto o = options();
  write_text(o.known_hosts,
             sshd_server->known_hosts_line(keys->user_other));  // some other ed25519 key
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    EXPECT_EQ(
        msg.rfind("HOST KEY CHANGED for [127.0.0.1]:" + std::to_string(sshd_server->port()), 0), 0u)
        << msg;
    EXPECT_NE(msg.find(ssh_keys::fingerprint(keys->host_ed25519)), std::string::npos) << msg;
    EXPECT_NE(msg.find(o.known_hosts.string() + ":1"), std::string::npos) << msg;
    // accept_new does not override a changed key.
    auto accept = o;
    accept.accept_new_host_key = true;
    const auto msg2 = co_await connect_error(accept);
    EXPECT_EQ(msg2.rfind("HOST KEY CHANGED", 0), 0u) << msg2;
  });
}

TEST_F(SshTunnelTest, WrongUserKeyIsRefusedWithAClearMessage) {
  auto o = options();
  o.identity_files = {keys->user_other};
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    EXPECT_EQ(msg, "authentication failed for user " + current_user() +
                       ": the server refused key " + keys->user_other.string() + " (ED25519 " +
                       ssh_keys::fingerprint(keys->user_other) + ")");
  });
}

TEST_F(SshTunnelTest, RsaKeyRefusalExplainsRsaSha2AndSuggestsEd25519) {
  auto o = options();
  o.identity_files = {keys->user_rsa};
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    EXPECT_NE(msg.find("rsa-sha2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ssh-keygen -t ed25519"), std::string::npos) << msg;
  });
}

TEST_F(SshTunnelTest, LaterKeysAreTriedAfterRefusedOnes) {
  auto o = options();
  o.identity_files = {dir_.path() / "missing", keys->user_other, keys->user_ed25519};
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (tunnel) tunnel->close();
  });
}

TEST_F(SshTunnelTest, EncryptedKeyWorksWithItsPassphrase) {
  auto o = options();
  o.identity_files = {keys->user_encrypted};
  o.passphrase = keys->passphrase;
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (tunnel) tunnel->close();
  });
}

TEST_F(SshTunnelTest, EncryptedKeyTakesThePassphraseFromTheEnvironment) {
  auto o = options();
  o.identity_files = {keys->user_encrypted};
  scoped_env env("TETHER_SSH_PASSPHRASE", &keys->passphrase);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (tunnel) tunnel->close();
  });
}

TEST_F(SshTunnelTest, EncryptedKeyWithoutOrWithAWrongPassphraseSaysSo) {
  auto o = options();
  o.identity_files = {keys->user_encrypted};
  scoped_env env("TETHER_SSH_PASSPHRASE", nullptr);
  run([&]() -> asio::awaitable<void> {
    const auto missing = co_await connect_error(o);
    EXPECT_NE(missing.find("is encrypted and no passphrase was given"), std::string::npos)
        << missing;
    auto wrong = o;
    wrong.passphrase = "not it";
    const auto msg = co_await connect_error(wrong);
    EXPECT_NE(msg.find("wrong passphrase"), std::string::npos) << msg;
  });
}

TEST_F(SshTunnelTest, WithoutKeyFilesTheAgentsKeysAreUsed) {
  ssh_agent agent(keys->user_agent);
  const auto sock = agent.socket().string();
  scoped_env env("SSH_AUTH_SOCK", &sock);
  auto o = options();
  o.identity_files.clear();
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(o);
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    EXPECT_FALSE(ec);
    tunnel->close();
  });
}

TEST_F(SshTunnelTest, WithoutKeyFilesOrAgentTheMessageSaysWhatIsMissing) {
  scoped_env env("SSH_AUTH_SOCK", nullptr);
  auto o = options();
  o.identity_files.clear();
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    EXPECT_NE(msg.find("no ssh-agent running"), std::string::npos) << msg;
  });
}

TEST_F(SshTunnelTest, ConnectionRefusedIsReported) {
  auto o = options();
  o.port = free_loopback_port();
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    // The caller names the server ("cannot reach 127.0.0.1:P: ..."): said once, not twice.
    EXPECT_EQ(msg, "connection refused");
  });
}

TEST_F(SshTunnelTest, AServerThatNeverSpeaksTimesOut) {
  asio::ip::tcp::acceptor silent(io_, {asio::ip::make_address("127.0.0.1"), 0});
  auto o = options();
  o.port = silent.local_endpoint().port();
  o.connect_timeout = 300ms;
  run([&]() -> asio::awaitable<void> {
    const auto msg = co_await connect_error(o);
    EXPECT_NE(msg.find("timed out"), std::string::npos) << msg;
  });
}

TEST_F(SshTunnelTest, ServerDroppingTheConnectionEndsTheSession) {
  sshd own(*keys);
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options(own));
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    if (!ch) co_return;
    own.drop_connections();
    // Both the idle receive and wait_closed learn of it.
    auto [rec, span] = co_await ch->receive();
    EXPECT_EQ(rec, make_error_code(errc::session_lost)) << rec.message();
    EXPECT_EQ(co_await tunnel->wait_closed(), make_error_code(errc::session_lost));
    EXPECT_NE(tunnel->last_open_error().find("closed by the server"), std::string::npos)
        << tunnel->last_open_error();
    auto [oec, och] = co_await open_to(*tunnel, echo.port());
    EXPECT_EQ(oec, make_error_code(errc::session_lost));
  });
}

TEST_F(SshTunnelTest, IdleSessionWithoutChannelsNoticesTheServerGoing) {
  sshd own(*keys);
  run(
      [&]() -> asio::awaitable<void> {
        auto o = options(own);
        o.keepalive = 0s;  // no keepalive to fail: the EOF itself must be seen
        auto tunnel = co_await connect(o);
        if (!tunnel) co_return;
        own.drop_connections();
        EXPECT_EQ(co_await tunnel->wait_closed(), make_error_code(errc::session_lost));
      },
      20s);
}

TEST_F(SshTunnelTest, CloseEndsChannelsAndWaitClosed) {
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    if (!ch) co_return;
    // `ch` through a pointer: clang 14 cannot capture a structured binding.
    auto receiver = [c = ch.get()]() -> asio::awaitable<asio::error_code> {
      auto [rec, span] = co_await c->receive();
      co_return rec;
    };
    auto closer = [&]() -> asio::awaitable<void> {
      tunnel->close();
      co_return;
    };
    const auto rec = co_await (receiver() && closer());
    EXPECT_EQ(rec, make_error_code(errc::session_lost));
    EXPECT_EQ(co_await tunnel->wait_closed(), make_error_code(errc::session_lost));
    EXPECT_EQ(co_await ch->send(std::as_bytes(std::span("x", 1))),
              make_error_code(errc::session_lost));
  });
}

TEST_F(SshTunnelTest, IdleSessionsAnswerTheServersKeepalives) {
  // The server sends a keepalive request (want-reply) after each quiet second, a global one
  // while no channel is open and a channel request once one is; we send our own keepalives
  // too (every 2 s, libssh2's shortest interval). The session must stay usable throughout.
  sshd strict(*keys, "ClientAliveInterval 1\nClientAliveCountMax 2");
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto o = options(strict);
    o.keepalive = 1s;
    auto tunnel = co_await connect(o);
    if (!tunnel) co_return;
    asio::steady_timer quiet(co_await asio::this_coro::executor);
    quiet.expires_after(2500ms);  // no channel at all
    co_await quiet.async_wait(use_tuple);
    auto [ec, ch] = co_await open_to(*tunnel, echo.port());
    EXPECT_FALSE(ec) << ec.message() << ": " << tunnel->last_open_error();
    if (!ch) co_return;
    quiet.expires_after(2500ms);  // one idle channel
    co_await quiet.async_wait(use_tuple);
    const std::string ping = "still there?";
    EXPECT_FALSE(co_await send_all(*ch, std::as_bytes(std::span(ping))));
    auto [rec, span] = co_await ch->receive();
    EXPECT_FALSE(rec) << rec.message();
    EXPECT_EQ(span.size(), ping.size());
    tunnel->close();
  });
}

TEST_F(SshTunnelTest, IdleChannelsDoNotDisturbABusyOne) {
  echo_server echo(io_);
  run([&]() -> asio::awaitable<void> {
    auto tunnel = co_await connect(options());
    if (!tunnel) co_return;
    std::vector<std::unique_ptr<mux::channel>> chans;
    for (int i = 0; i < 20; ++i) {
      auto [ec, ch] = co_await open_to(*tunnel, echo.port());
      if (ch) chans.push_back(std::move(ch));
    }
    EXPECT_EQ(chans.size(), 20u);
    // Round trip on the last one while the others sit idle.
    const std::string ping = "ping";
    EXPECT_FALSE(co_await send_all(*chans.back(), std::as_bytes(std::span(ping))));
    auto [rec, span] = co_await chans.back()->receive();
    EXPECT_EQ(span.size(), ping.size());
    chans.clear();  // closes them all
    tunnel->close();
  });
}

}  // namespace
}  // namespace tether::transport
