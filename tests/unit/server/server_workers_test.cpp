// The server on several workers, in one process: real TLS sessions from a client event loop
// on the test's thread, a TCP echo device on a thread of its own, the server's workers on
// theirs. What the integration tests check with processes, here under the unit tests'
// sanitizers (ThreadSanitizer sees every thread of the server).

#include <gtest/gtest.h>
#include <stdlib.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>
#include <atomic>
#include <filesystem>
#include <thread>

#include "../mux/session_fixture.hpp"
#include "tether/mux/use_tuple.hpp"
#include "tether/server/server.hpp"
#include "tether/server/worker_pool.hpp"
#include "tether/transport/dev_pki.hpp"
#include "tether/transport/tls.hpp"

namespace tether::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using asio::ip::tcp;
using mux::testing::receive_all;
using mux::testing::send_all;

// A device port that echoes every connection until its EOF, then half-closes: on its own
// thread, like a device out on the network.
class echo_device {
 public:
  echo_device() : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~echo_device() {
    io_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(use_tuple);
      if (ec) co_return;
      asio::co_spawn(io_, echo(std::move(sock)), asio::detached);
    }
  }
  static asio::awaitable<void> echo(tcp::socket sock) {
    std::array<char, 64 * 1024> buf;
    for (;;) {
      auto [rec, n] = co_await sock.async_read_some(asio::buffer(buf), use_tuple);
      if (rec) break;
      auto [wec, m] = co_await asio::async_write(sock, asio::buffer(buf, n), use_tuple);
      if (wec) co_return;
    }
    asio::error_code ignored;
    sock.shutdown(tcp::socket::shutdown_send, ignored);
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

credential allow_all(const std::string& name, const std::string& token) {
  return credential{name, sha256(token), acl({parse_acl_rule("*").value()})};
}

class ServerOnWorkers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = (fs::temp_directory_path() / "tether-workers-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = new fs::path(tmpl);
    pki_ = new transport::dev_pki(transport::ensure_dev_pki(*dir_ / "pki"));
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(*dir_, ignored);
    delete pki_;
    delete dir_;
  }

  server_config config(std::vector<credential> creds) const {
    server_config c;
    c.listen = {"127.0.0.1", 0};
    c.cert = pki_->server_cert;
    c.key = pki_->server_key;
    c.credentials = std::move(creds);
    c.devices = {{"echo", "127.0.0.1"}};
    c.grace_period = 5s;
    return c;
  }

  // Starts the server's workers on a thread of the test (worker 0 runs there).
  void start(server& srv) {
    port_ = srv.listen().port();
    asio::co_spawn(pool_.context(0), srv.run(), asio::detached);
    workers_thread_ = std::thread([this] { pool_.run(); });
  }

  // Runs `f` on worker 0, where the server's own calls are made.
  template <typename F>
  void on_worker_zero(F f) {
    asio::post(pool_.executor(0), std::move(f));
  }

  // One client session over TLS; null (and a failure) if it did not come up.
  std::shared_ptr<mux::session> dial(const std::string& token) {
    std::shared_ptr<mux::session> out;
    bool done = false;
    asio::co_spawn(
        client_io_,
        [&]() -> asio::awaitable<void> {
          auto [ec, stream] = co_await transport::dial_tls(tls_, "127.0.0.1", port_, 10s);
          if (ec) {
            ADD_FAILURE() << "dial: " << ec.message();
            done = true;
            co_return;
          }
          auto s = mux::session::make(std::move(stream), {});
          std::string message;
          if (auto sec = co_await s->start_client(token, wire::role::client, {}, message)) {
            ADD_FAILURE() << "session refused: " << sec.message() << " " << message;
          } else {
            out = s;
          }
          done = true;
        },
        asio::detached);
    run_client_until([&] { return done; });
    return out;
  }

  // Opens a stream to the echo device on `s`, sends `data` and its EOF while reading the
  // echo to its end; counts it in `ok` when every byte came back.
  void echo_stream(std::shared_ptr<mux::session> s, std::string data, int& ok, int& failed) {
    asio::co_spawn(
        client_io_,
        [this, s, data = std::move(data), &ok, &failed]() -> asio::awaitable<void> {
          using namespace asio::experimental::awaitable_operators;
          // Named first: g++ 12 frees a braced std::string temporary in co_await twice.
          mux::target echo_target{"echo", echo_.port(), mux::protocol::tcp};
          auto [ec, ch] = co_await s->open(std::move(echo_target));
          if (ec) {
            ++failed;
            co_return;
          }
          auto send_then_eof = [&, &ch = ch]() -> asio::awaitable<void> {
            co_await send_all(*ch, mux::testing::as_bytes(data));
            co_await ch->send_eof();
          };
          auto [rec, back] = co_await (send_then_eof() && receive_all(*ch));
          if (rec || back != data)
            ++failed;
          else
            ++ok;
        },
        [&failed](std::exception_ptr e) {
          if (e) ++failed;
        });
  }

  template <typename Pred>
  bool run_client_until(Pred done, std::chrono::milliseconds limit = 60s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      client_io_.restart();
      client_io_.run_one_for(10ms);
    }
    return done();
  }

  // Ends the test's side: the server stopped by the test body must let its workers go.
  void join_workers() {
    if (workers_thread_.joinable()) workers_thread_.join();
  }

  void TearDown() override {
    if (workers_thread_.joinable()) {
      pool_.stop();
      workers_thread_.join();
    }
  }

  static std::string pattern(int session, int stream, std::size_t size) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
      s[i] = static_cast<char>((i * 31 + static_cast<std::size_t>(session * 7 + stream)) & 0xff);
    return s;
  }

  static fs::path* dir_;
  static transport::dev_pki* pki_;
  echo_device echo_;
  worker_pool pool_{2};
  std::uint16_t port_ = 0;
  std::thread workers_thread_;
  asio::io_context client_io_;
  transport::tls_client_context tls_{{pki_->ca_cert.string(), "127.0.0.1", ""}};
};

fs::path* ServerOnWorkers::dir_ = nullptr;
transport::dev_pki* ServerOnWorkers::pki_ = nullptr;

TEST_F(ServerOnWorkers, ManySessionsEchoEveryByteAndAGracefulStopReachesThemAll) {
  const auto token = generate_token();
  server srv(pool_, config({allow_all("laptop", token)}));
  start(srv);

  constexpr int sessions = 8, streams = 4;
  constexpr std::size_t size = 256 * 1024;
  std::vector<std::shared_ptr<mux::session>> clients;
  for (int i = 0; i < sessions; ++i) {
    clients.push_back(dial(token));
    ASSERT_TRUE(clients.back());
  }
  int ok = 0, failed = 0;
  for (int i = 0; i < sessions; ++i)
    for (int k = 0; k < streams; ++k) echo_stream(clients[i], pattern(i, k, size), ok, failed);
  ASSERT_TRUE(run_client_until([&] { return ok + failed == sessions * streams; }));
  EXPECT_EQ(failed, 0);
  // The server counts a stream's bytes as its relay ends, just after the client has them.
  EXPECT_TRUE(run_client_until([&] {
    return srv.counters().bytes_from_devices == std::uint64_t{sessions * streams} * size;
  }));
  const auto c = srv.counters();
  EXPECT_EQ(c.sessions_accepted, std::uint64_t{sessions});
  EXPECT_EQ(c.streams_opened, std::uint64_t{sessions * streams});
  EXPECT_EQ(c.bytes_to_devices, std::uint64_t{sessions * streams} * size);

  // A graceful stop with a stream open on every session: each session, on whichever
  // worker, gets GOAWAY and then is closed; the workers end.
  std::size_t held_failed = 0;
  std::vector<std::unique_ptr<mux::channel>> held;
  for (auto& s : clients) {
    asio::co_spawn(
        client_io_,
        [&, s]() -> asio::awaitable<void> {
          // Named first: g++ 12 frees a braced std::string temporary in co_await twice.
          mux::target echo_target{"echo", echo_.port(), mux::protocol::tcp};
          auto [ec, ch] = co_await s->open(std::move(echo_target));
          if (ec)
            ++held_failed;
          else
            held.push_back(std::move(ch));
        },
        asio::detached);
  }
  ASSERT_TRUE(run_client_until([&] { return held.size() + held_failed == clients.size(); }));
  ASSERT_EQ(held_failed, 0);
  std::atomic<bool> stopped{false};
  on_worker_zero([&] {
    asio::co_spawn(pool_.context(0), srv.shutdown(), [&](std::exception_ptr) {
      pool_.release();
      stopped = true;
    });
  });
  // The held streams make the stop wait for its grace period; ending them ends the wait.
  for (auto& ch : held) ch->reset(errc::going_away);
  EXPECT_TRUE(run_client_until([&] {
    return std::all_of(clients.begin(), clients.end(), [](auto& s) { return s->closed(); });
  }));
  join_workers();
  EXPECT_TRUE(stopped);
}

TEST_F(ServerOnWorkers, AReloadEndsTheSessionsOfARemovedCredentialOnEveryWorker) {
  const auto stay = generate_token(), gone = generate_token();
  const auto both = config({allow_all("stay", stay), allow_all("gone", gone)});
  server srv(pool_, both);
  start(srv);

  std::vector<std::shared_ptr<mux::session>> staying, going;
  for (int i = 0; i < 3; ++i) {
    going.push_back(dial(gone));  // round robin: on both workers
    staying.push_back(dial(stay));
    ASSERT_TRUE(going.back() && staying.back());
  }
  std::atomic<bool> reloaded{false};
  on_worker_zero([&] {
    srv.reload(config({allow_all("stay", stay)}));
    reloaded = true;
  });
  EXPECT_TRUE(run_client_until([&] {
    return std::all_of(going.begin(), going.end(), [](auto& s) { return s->closed(); });
  }));
  EXPECT_TRUE(reloaded);
  int ok = 0, failed = 0;
  for (std::size_t i = 0; i < staying.size(); ++i) {
    EXPECT_FALSE(staying[i]->closed());
    echo_stream(staying[i], pattern(static_cast<int>(i), 0, 64 * 1024), ok, failed);
  }
  ASSERT_TRUE(run_client_until([&] { return ok + failed == static_cast<int>(staying.size()); }));
  EXPECT_EQ(failed, 0);

  // abort() cuts the rest at once, on every worker.
  on_worker_zero([&] {
    srv.abort();
    pool_.release();
  });
  EXPECT_TRUE(run_client_until([&] {
    return std::all_of(staying.begin(), staying.end(), [](auto& s) { return s->closed(); });
  }));
  join_workers();
}

}  // namespace
}  // namespace tether::server
