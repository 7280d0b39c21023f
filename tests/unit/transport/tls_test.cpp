// The TLS byte_stream over real loopback sockets with certificates from ensure_dev_pki.
// Our own client and server talk to each other, and to a plain blocking OpenSSL peer on a
// thread where a test needs something our API does not do (key updates, TLS 1.2 only).

#include "tether/transport/tls.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tether/transport/dev_pki.hpp"

namespace tether::transport {
namespace {

using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using tcp = asio::ip::tcp;
using digest = std::array<unsigned char, 32>;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr auto handshake_timeout = 10s;

// ---- helpers -------------------------------------------------------------------------------

class sha256 {
 public:
  sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~sha256() { EVP_MD_CTX_free(ctx_); }
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  digest final() {
    digest d{};
    EVP_DigestFinal_ex(ctx_, d.data(), nullptr);
    return d;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Deterministic bytes, different per seed.
class byte_source {
 public:
  explicit byte_source(std::uint64_t seed) : x_(seed * 0x9E3779B97F4A7C15ULL + 1) {}
  void fill(std::vector<unsigned char>& v) {
    for (auto& b : v) {
      x_ ^= x_ << 13;
      x_ ^= x_ >> 7;
      x_ ^= x_ << 17;
      b = static_cast<unsigned char>(x_);
    }
  }

 private:
  std::uint64_t x_;
};

struct tls_dir {
  tls_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tether-tls-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~tls_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

// Runs a test coroutine on a fresh io_context on this thread. A hang fails the test at
// `limit` instead of blocking the suite.
template <class MakeAwaitable>
void run(MakeAwaitable make, std::chrono::seconds limit = 60s) {
  asio::io_context io;
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, make(), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  io.run_for(limit);
  ASSERT_TRUE(done) << "the test did not finish within " << limit.count() << " s";
  if (error) std::rethrow_exception(error);
}

tcp::acceptor listen_loopback(const asio::any_io_executor& ex) {
  return tcp::acceptor(ex, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
}

asio::awaitable<tls_result> accept_one(tcp::acceptor& acceptor, tls_server_context& ctx,
                                       std::chrono::milliseconds timeout = handshake_timeout) {
  auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
  if (ec) co_return tls_result{ec, nullptr};
  co_return co_await accept_tls(ctx, std::move(socket), timeout);
}

struct connected {
  tls_result server;
  tls_result client;
};

// A server and a client handshake run concurrently on one acceptor.
asio::awaitable<connected> connect_pair(tls_server_context& sctx, tls_client_context& cctx,
                                        std::string host = "127.0.0.1") {
  auto acceptor = listen_loopback(co_await asio::this_coro::executor);
  const auto port = acceptor.local_endpoint().port();
  auto [s, c] = co_await (accept_one(acceptor, sctx) &&
                          dial_tls(cctx, std::move(host), port, handshake_timeout));
  co_return connected{std::move(s), std::move(c)};
}

// Writes `total` bytes from `seed` in writes of varied sizes (1 B to 512 KiB), then shuts
// down. Returns the digest of what was sent.
asio::awaitable<digest> send_all(mux::byte_stream& s, std::uint64_t seed, std::size_t total) {
  static constexpr std::array<std::size_t, 9> sizes{1,     7,     1000,   16383, 16384,
                                                    16385, 65536, 200000, 524288};
  byte_source src(seed);
  sha256 h;
  std::vector<unsigned char> buf;
  std::size_t sent = 0;
  for (std::size_t i = 0; sent < total; ++i) {
    buf.resize(std::min(sizes[i % sizes.size()], total - sent));
    src.fill(buf);
    h.update(buf.data(), buf.size());
    const auto ec = co_await s.write(asio::buffer(buf));
    EXPECT_FALSE(ec) << describe_tls_error(ec);
    if (ec) break;
    sent += buf.size();
  }
  co_await s.shutdown();
  co_return h.final();
}

struct received {
  digest hash{};
  std::size_t bytes = 0;
  asio::error_code end;  // what ended the stream: eof if orderly
};

// Reads until the stream ends, with varied buffer sizes.
asio::awaitable<received> receive_all(mux::byte_stream& s) {
  static constexpr std::array<std::size_t, 6> sizes{65536, 17, 262144, 1000, 1 << 20, 4096};
  std::vector<unsigned char> buf(1 << 20);
  sha256 h;
  received r;
  for (std::size_t i = 0;; ++i) {
    auto [ec, n] = co_await s.read_some(asio::buffer(buf.data(), sizes[i % sizes.size()]));
    if (ec) {
      r.end = ec;
      break;
    }
    EXPECT_GT(n, 0u);
    h.update(buf.data(), n);
    r.bytes += n;
  }
  r.hash = h.final();
  co_return r;
}

asio::awaitable<std::string> read_string(mux::byte_stream& s, std::size_t n) {
  std::string out;
  char buf[256];
  while (out.size() < n) {
    auto [ec, got] = co_await s.read_some(asio::buffer(buf, std::min(sizeof buf, n - out.size())));
    if (ec) break;
    out.append(buf, got);
  }
  co_return out;
}

// ---- a plain OpenSSL peer on its own thread ------------------------------------------------

// A blocking OpenSSL server on 127.0.0.1 that accepts one connection, echoes what it reads
// until close_notify, then answers with its own close_notify. Socket timeouts bound every
// call, so a failing test cannot leave the thread stuck.
class openssl_echo_server {
 public:
  struct options {
    int max_version = 0;               // e.g. TLS1_2_VERSION; 0: no limit
    std::size_t key_update_every = 0;  // request a key update after this many bytes
  };

  openssl_echo_server(const dev_pki& pki, options opt) : opt_(opt) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_chain_file(ctx_, pki.server_cert.c_str());
    SSL_CTX_use_PrivateKey_file(ctx_, pki.server_key.c_str(), SSL_FILETYPE_PEM);
    if (opt_.max_version != 0) SSL_CTX_set_max_proto_version(ctx_, opt_.max_version);
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listen_fd_, 1);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~openssl_echo_server() {
    ::shutdown(listen_fd_, SHUT_RDWR);  // unblocks accept() if nobody came
    thread_.join();
    ::close(listen_fd_);
    SSL_CTX_free(ctx_);
  }

  std::uint16_t port() const { return port_; }
  // Valid after the destructor's join, or once the client saw the echo end.
  int version() const { return version_; }
  std::size_t echoed() const { return echoed_; }
  bool clean_end() const { return clean_end_; }
  int key_updates() const { return key_updates_; }

 private:
  void serve() {
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    timeval tv{20, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      version_ = SSL_version(ssl);
      std::vector<char> buf(64 * 1024);
      std::size_t since_update = 0;
      for (;;) {
        const int n = SSL_read(ssl, buf.data(), static_cast<int>(buf.size()));
        if (n <= 0) {
          clean_end_ = SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN;
          break;
        }
        since_update += static_cast<std::size_t>(n);
        if (opt_.key_update_every != 0 && since_update >= opt_.key_update_every) {
          since_update = 0;
          // Sent with the next write; asks us to update our sending keys too.
          if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1) ++key_updates_;
        }
        if (SSL_write(ssl, buf.data(), n) != n) break;
        echoed_ += static_cast<std::size_t>(n);
      }
      SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    ::close(fd);
  }

  options opt_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
  int version_ = 0;
  std::size_t echoed_ = 0;
  bool clean_end_ = false;
  int key_updates_ = 0;
};

// ---- fixture -------------------------------------------------------------------------------

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new tls_dir();
    pki_ = ensure_dev_pki(dir_->path / "pki");
    other_pki_ = ensure_dev_pki(dir_->path / "other");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  tls_server_context server_ctx() const { return {pki_.server_cert, pki_.server_key}; }
  tls_client_context client_ctx(std::string server_name = {}) const {
    return tls_client_context({pki_.ca_cert.string(), std::move(server_name)});
  }

  static tls_dir* dir_;
  static dev_pki pki_;
  static dev_pki other_pki_;
};

tls_dir* TlsTest::dir_ = nullptr;
dev_pki TlsTest::pki_;
dev_pki TlsTest::other_pki_;

// ---- tests ---------------------------------------------------------------------------------

TEST_F(TlsTest, BulkBothWaysAtOnceArrivesIntact) {
  auto sctx = server_ctx();
  auto cctx = client_ctx();
  constexpr std::size_t total = 32u << 20;
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, cctx);
    EXPECT_FALSE(s.first) << describe_tls_error(s.first);
    EXPECT_FALSE(c.first) << describe_tls_error(c.first);
    if (!s.second || !c.second) co_return;
    auto& server = *s.second;
    auto& client = *c.second;

    auto [c_sent, s_sent, s_got, c_got] =
        co_await (send_all(client, 1, total) && send_all(server, 2, total) && receive_all(server) &&
                  receive_all(client));

    EXPECT_EQ(s_got.bytes, total);
    EXPECT_EQ(c_got.bytes, total);
    EXPECT_EQ(s_got.hash, c_sent);
    EXPECT_EQ(c_got.hash, s_sent);
    EXPECT_EQ(s_got.end, asio::error::eof) << describe_tls_error(s_got.end);
    EXPECT_EQ(c_got.end, asio::error::eof) << describe_tls_error(c_got.end);
  });
}

TEST_F(TlsTest, ManySmallWritesKeepOrderAndBoundaries) {
  auto sctx = server_ctx();
  auto cctx = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, cctx);
    if (!s.second || !c.second) {
      ADD_FAILURE() << describe_tls_error(s.first) << " / " << describe_tls_error(c.first);
      co_return;
    }
    std::string expected;
    // Structured bindings are named through pointers: clang 14 cannot capture them.
    auto writer = [&, client = c.second.get()]() -> asio::awaitable<void> {
      for (int i = 0; i < 20000; ++i) {
        std::string msg(static_cast<std::size_t>(1 + i % 32), static_cast<char>('a' + i % 26));
        msg.back() = static_cast<char>('0' + i % 10);
        expected += msg;
        const auto ec = co_await client->write(asio::buffer(msg));
        EXPECT_FALSE(ec) << describe_tls_error(ec);
        if (ec) break;
      }
      co_await client->shutdown();
    };
    auto reader = [server = s.second.get()]()
        -> asio::awaitable<std::pair<std::string, asio::error_code>> {
      std::string got;
      char buf[4096];
      for (;;) {
        auto [ec, n] = co_await server->read_some(asio::buffer(buf));
        if (ec) co_return std::pair{got, ec};
        got.append(buf, n);
      }
    };
    auto [got, end] = co_await (writer() && reader());
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected) << "bytes differ";
    EXPECT_EQ(end, asio::error::eof);
  });
}

TEST_F(TlsTest, PeerShutdownReadsAsEofAfterTheData) {
  auto sctx = server_ctx();
  auto cctx = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, cctx);
    if (!s.second || !c.second) {
      ADD_FAILURE() << describe_tls_error(s.first) << " / " << describe_tls_error(c.first);
      co_return;
    }
    EXPECT_EQ(c.second->peer().rfind("127.0.0.1:", 0), 0u) << c.second->peer();
    EXPECT_FALSE(co_await s.second->write(asio::buffer(std::string("hello"))));
    co_await s.second->shutdown();

    EXPECT_EQ(co_await read_string(*c.second, 5), "hello");
    char buf[16];
    auto [ec1, n1] = co_await c.second->read_some(asio::buffer(buf));
    EXPECT_EQ(ec1, asio::error::eof) << describe_tls_error(ec1);
    EXPECT_EQ(n1, 0u);
    auto [ec2, n2] = co_await c.second->read_some(asio::buffer(buf));
    EXPECT_EQ(ec2, asio::error::eof) << "eof is sticky";

    // The other direction still works after the peer's close_notify (half-close).
    EXPECT_FALSE(co_await c.second->write(asio::buffer(std::string("bye"))));
    EXPECT_EQ(co_await read_string(*s.second, 3), "bye");
  });
}

TEST_F(TlsTest, AbortiveCloseIsNotAnOrderlyEof) {
  auto sctx = server_ctx();
  auto cctx = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, cctx);
    if (!s.second || !c.second) {
      ADD_FAILURE() << describe_tls_error(s.first) << " / " << describe_tls_error(c.first);
      co_return;
    }
    s.second->close();  // TCP FIN without close_notify: a truncation, not an end
    char buf[16];
    auto [ec, n] = co_await c.second->read_some(asio::buffer(buf));
    EXPECT_TRUE(ec);
    EXPECT_NE(ec, asio::error::eof);
    EXPECT_EQ(describe_tls_error(ec), "TLS error: unexpected eof while reading");
  });
}

TEST_F(TlsTest, CloseAbortsPendingReadAndWrite) {
  auto sctx = server_ctx();
  auto cctx = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto [s, c] = co_await connect_pair(sctx, cctx);
    if (!s.second || !c.second) {
      ADD_FAILURE() << describe_tls_error(s.first) << " / " << describe_tls_error(c.first);
      co_return;
    }
    // The server never reads, so a large enough write blocks in the kernel.
    std::vector<char> big(64u << 20, 'x');
    bool read_done = false, write_done = false;
    asio::error_code read_ec, write_ec;
    char buf[16];
    asio::co_spawn(ex, c.second->read_some(asio::buffer(buf)), [&](std::exception_ptr, auto r) {
      read_ec = r.first;
      read_done = true;
    });
    asio::co_spawn(ex, c.second->write(asio::buffer(big)), [&](std::exception_ptr, auto ec) {
      write_ec = ec;
      write_done = true;
    });
    for (int i = 0; i < 10; ++i) co_await asio::post(ex, asio::use_awaitable);
    EXPECT_FALSE(read_done);
    EXPECT_FALSE(write_done);
    c.second->close();
    c.second->close();  // idempotent
    while (!read_done || !write_done) co_await asio::post(ex, asio::use_awaitable);
    EXPECT_EQ(read_ec, asio::error::operation_aborted);
    EXPECT_EQ(write_ec, asio::error::operation_aborted);
  });
}

TEST_F(TlsTest, ACancelledReadLeavesTheStreamUsable) {
  auto sctx = server_ctx();
  auto cctx = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto [s, c] = co_await connect_pair(sctx, cctx);
    if (!s.second || !c.second) {
      ADD_FAILURE() << describe_tls_error(s.first) << " / " << describe_tls_error(c.first);
      co_return;
    }
    char buf[16];
    asio::steady_timer timer(ex, 50ms);
    auto first =
        co_await (c.second->read_some(asio::buffer(buf)) || timer.async_wait(asio::use_awaitable));
    EXPECT_EQ(first.index(), 1u) << "the timer should win: nothing was sent";

    EXPECT_FALSE(co_await s.second->write(asio::buffer(std::string("after"))));
    EXPECT_EQ(co_await read_string(*c.second, 5), "after");
  });
}

TEST_F(TlsTest, WrongCaIsACertificateError) {
  auto sctx = server_ctx();
  tls_client_context cctx({other_pki_.ca_cert.string(), ""});
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, cctx);
    EXPECT_FALSE(c.second);
    EXPECT_TRUE(is_certificate_error(c.first)) << c.first.category().name();
    EXPECT_EQ(describe_tls_error(c.first),
              "certificate verification failed: unable to get local issuer certificate");
    // The server learns why from the client's alert instead of waiting for its timeout.
    EXPECT_FALSE(s.second);
    EXPECT_FALSE(is_certificate_error(s.first));
    EXPECT_EQ(describe_tls_error(s.first), "TLS handshake failed: tlsv1 alert unknown ca");
  });
}

TEST_F(TlsTest, HostNameMismatchIsACertificateError) {
  auto sctx = server_ctx();
  auto cctx = client_ctx("example.invalid");
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, cctx);
    EXPECT_FALSE(c.second);
    EXPECT_TRUE(is_certificate_error(c.first));
    EXPECT_EQ(describe_tls_error(c.first), "certificate verification failed: hostname mismatch");
  });
}

TEST_F(TlsTest, IpAddressIsCheckedAgainstIpSans) {
  auto sctx = server_ctx();
  auto wrong = client_ctx("127.0.0.2");
  auto by_name = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto [s1, c1] = co_await connect_pair(sctx, wrong);
    EXPECT_TRUE(is_certificate_error(c1.first));
    EXPECT_EQ(describe_tls_error(c1.first), "certificate verification failed: IP address mismatch");

    auto [s2, c2] = co_await connect_pair(sctx, by_name, "localhost");
    EXPECT_FALSE(c2.first) << describe_tls_error(c2.first);
    EXPECT_FALSE(s2.first) << describe_tls_error(s2.first);
  });
}

TEST_F(TlsTest, AMismatchNamesWhatTheCertificateIsFor) {
  auto sctx = server_ctx();
  auto cctx = client_ctx("127.0.0.2");  // verified as 127.0.0.2, not in the certificate
  run([&]() -> asio::awaitable<void> {
    auto acceptor = listen_loopback(co_await asio::this_coro::executor);
    const auto port = acceptor.local_endpoint().port();
    std::string names = "untouched";
    auto [s, c] = co_await (accept_one(acceptor, sctx) &&
                            dial_tls(cctx, "127.0.0.1", port, handshake_timeout, &names));
    EXPECT_TRUE(is_certificate_error(c.first));
    EXPECT_EQ(names, "localhost, 127.0.0.1, ::1");

    // Any other failure (here: nobody listening) leaves no names.
    acceptor.close();
    std::string none;
    auto [ec, stream] = co_await dial_tls(cctx, "127.0.0.1", port, handshake_timeout, &none);
    EXPECT_TRUE(ec);
    EXPECT_EQ(none, "");
  });
}

TEST_F(TlsTest, APinnedKeyIsTrustedWithoutACaAndWhateverTheName) {
  auto sctx = server_ctx();
  const auto pin = public_key_pin(pki_.server_cert);
  EXPECT_EQ(pin.rfind("sha256:", 0), 0u);
  EXPECT_EQ(pin.size(), 7u + 64u);
  tls_client_context pinned({"", "example.invalid", pin});
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, pinned);
    EXPECT_FALSE(c.first) << describe_tls_error(c.first);
    EXPECT_FALSE(s.first) << describe_tls_error(s.first);
  });
}

TEST_F(TlsTest, APinInCapitalsIsTheSamePin) {
  auto sctx = server_ctx();
  auto pin = public_key_pin(pki_.server_cert);
  for (auto& c : pin) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_EQ(pin.rfind("SHA256:", 0), 0u);
  tls_client_context pinned({"", "", pin});
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, pinned);
    EXPECT_FALSE(c.first) << describe_tls_error(c.first);
  });
}

TEST_F(TlsTest, AnotherKeyThanThePinnedOneIsRefused) {
  auto sctx = server_ctx();
  tls_client_context pinned({"", "", public_key_pin(other_pki_.server_cert)});
  run([&]() -> asio::awaitable<void> {
    auto [s, c] = co_await connect_pair(sctx, pinned);
    EXPECT_FALSE(c.second);
    EXPECT_TRUE(is_certificate_error(c.first));
    EXPECT_EQ(describe_tls_error(c.first),
              "certificate verification failed: the server's public key is not the pinned one");
  });
}

TEST_F(TlsTest, AMalformedPinIsRefusedWithTheFormat) {
  for (const char* bad : {"sha256:abc", "md5:00", "8d01483a2a6b46a8a689558a58bde199c0849398125108"
                                                  "56d90cb354ba8cb64c"}) {
    try {
      tls_client_context ctx({"", "", bad});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("sha256: and 64 hex digits"), std::string::npos);
    }
  }
}

TEST_F(TlsTest, HttpRequestToTheServerFailsFast) {
  auto sctx = server_ctx();
  run(
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_loopback(ex);
        tcp::socket raw(ex);
        co_await raw.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
        const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        co_await asio::async_write(raw, asio::buffer(request), asio::use_awaitable);

        // A 60 s handshake timeout: only a prompt failure finishes within the test's limit.
        auto [ec, stream] = co_await accept_one(acceptor, sctx, 60s);
        EXPECT_FALSE(stream);
        EXPECT_EQ(describe_tls_error(ec), "TLS handshake failed: http request");

        // The raw client sees the connection end rather than hang.
        char buf[256];
        asio::error_code rec;
        while (!rec)
          std::tie(rec, std::ignore) = co_await raw.async_read_some(asio::buffer(buf), use_tuple);
      },
      20s);
}

TEST_F(TlsTest, GarbageToTheServerFailsFast) {
  auto sctx = server_ctx();
  run(
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_loopback(ex);
        tcp::socket raw(ex);
        co_await raw.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
        std::string garbage(300, '\0');
        for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 7 + 3);
        co_await asio::async_write(raw, asio::buffer(garbage), asio::use_awaitable);

        auto [ec, stream] = co_await accept_one(acceptor, sctx, 60s);
        EXPECT_FALSE(stream);
        EXPECT_EQ(describe_tls_error(ec).rfind("TLS handshake failed: ", 0), 0u)
            << describe_tls_error(ec);
      },
      20s);
}

TEST_F(TlsTest, ServerHandshakeTimesOutWhenThePeerIsSilent) {
  auto sctx = server_ctx();
  run(
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_loopback(ex);
        tcp::socket raw(ex);
        co_await raw.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
        const auto start = std::chrono::steady_clock::now();
        auto [ec, stream] = co_await accept_one(acceptor, sctx, 300ms);
        EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
        EXPECT_FALSE(stream);
        EXPECT_EQ(ec, asio::error::timed_out);
        EXPECT_EQ(describe_tls_error(ec), "timed out");
      },
      20s);
}

TEST_F(TlsTest, ClientHandshakeTimesOutWhenTheServerIsSilent) {
  auto cctx = client_ctx();
  run(
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_loopback(ex);  // accepts TCP (backlog) but never speaks TLS
        auto [ec, stream] =
            co_await dial_tls(cctx, "127.0.0.1", acceptor.local_endpoint().port(), 300ms);
        EXPECT_FALSE(stream);
        EXPECT_EQ(ec, asio::error::timed_out);
      },
      20s);
}

TEST_F(TlsTest, RefusedConnectionIsReportedAsSuch) {
  auto cctx = client_ctx();
  run([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    // Bound but not listening: connects are refused, and no one else can take the port.
    tcp::socket holder(ex, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    auto [ec, stream] = co_await dial_tls(cctx, "127.0.0.1", holder.local_endpoint().port(), 5s);
    EXPECT_FALSE(stream);
    EXPECT_EQ(ec, asio::error::connection_refused);
    EXPECT_EQ(describe_tls_error(ec), "connection refused");
    EXPECT_FALSE(is_certificate_error(ec));
  });
}

TEST_F(TlsTest, KeyUpdatesRequestedByThePeerMidStream) {
  openssl_echo_server peer(pki_, {.max_version = 0, .key_update_every = 256 * 1024});
  auto cctx = client_ctx();
  constexpr std::size_t total = 8u << 20;
  run([&]() -> asio::awaitable<void> {
    auto [ec, c] = co_await dial_tls(cctx, "127.0.0.1", peer.port(), handshake_timeout);
    if (!c) {
      ADD_FAILURE() << describe_tls_error(ec);
      co_return;
    }
    // Our writes carry the answers to the peer's requests while reads take its new keys.
    auto [sent, echoed] = co_await (send_all(*c, 3, total) && receive_all(*c));
    EXPECT_EQ(echoed.bytes, total);
    EXPECT_EQ(echoed.hash, sent);
    EXPECT_EQ(echoed.end, asio::error::eof) << describe_tls_error(echoed.end);
  });
  EXPECT_EQ(peer.echoed(), total);
  EXPECT_TRUE(peer.clean_end());
  EXPECT_EQ(peer.version(), TLS1_3_VERSION);
  EXPECT_GE(peer.key_updates(), 16);
}

TEST_F(TlsTest, SpeaksTls12WithAPeerThatOnlyHasIt) {
  openssl_echo_server peer(pki_, {.max_version = TLS1_2_VERSION, .key_update_every = 0});
  auto cctx = client_ctx();
  constexpr std::size_t total = 4u << 20;
  run([&]() -> asio::awaitable<void> {
    auto [ec, c] = co_await dial_tls(cctx, "127.0.0.1", peer.port(), handshake_timeout);
    if (!c) {
      ADD_FAILURE() << describe_tls_error(ec);
      co_return;
    }
    auto [sent, echoed] = co_await (send_all(*c, 4, total) && receive_all(*c));
    EXPECT_EQ(echoed.bytes, total);
    EXPECT_EQ(echoed.hash, sent);
  });
  EXPECT_EQ(peer.version(), TLS1_2_VERSION);
}

TEST_F(TlsTest, ServerPicksAesGcmEvenIfTheClientPrefersChaCha) {
  auto sctx = server_ctx();
  std::string cipher;
  run([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto acceptor = listen_loopback(ex);
    const auto port = acceptor.local_endpoint().port();
    std::thread client([&] {
      SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
      SSL_CTX_set_ciphersuites(ctx, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      timeval tv{20, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(port);
      SSL* ssl = SSL_new(ctx);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) == 1) {
          cipher = SSL_get_cipher_name(ssl);
          SSL_shutdown(ssl);
          // Read the rest (session tickets, the server's close_notify) so that close()
          // sends a FIN, not a reset.
          char buf[256];
          while (SSL_read(ssl, buf, sizeof buf) > 0) {
          }
        }
      }
      SSL_free(ssl);
      ::close(fd);
      SSL_CTX_free(ctx);
    });
    auto [ec, s] = co_await accept_one(acceptor, sctx);
    EXPECT_FALSE(ec) << describe_tls_error(ec);
    if (s) {
      char buf[16];
      auto [rec, n] = co_await s->read_some(asio::buffer(buf));  // the client's close_notify
      EXPECT_EQ(rec, asio::error::eof) << describe_tls_error(rec);
      co_await s->shutdown();
    }
    client.join();
  });
  EXPECT_EQ(cipher, "TLS_AES_128_GCM_SHA256");
}

TEST_F(TlsTest, ContextsNameTheFileTheyCannotLoad) {
  const auto missing = (dir_->path / "missing.pem").string();
  try {
    tls_client_context c({missing, ""});
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  // A key is not a CA bundle.
  try {
    tls_client_context c({pki_.server_key.string(), ""});
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(pki_.server_key.string()), std::string::npos) << e.what();
  }
  // A key that does not belong to the certificate.
  try {
    tls_server_context s(pki_.server_cert, other_pki_.server_key);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(other_pki_.server_key.string()), std::string::npos)
        << e.what();
  }
  try {
    tls_server_context s(missing, pki_.server_key);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tether::transport
