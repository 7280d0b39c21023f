// splice() moving a stream (docs/PROTOCOL.md, "Moving a stream"), over a real session pair
// with lanes and real loopback sockets: the client's splice, with a move_policy, stops once
// the stream turns bulk and sends MOVE; the server's, without one, stops at that MOVE. Both
// leave their sockets open, and no byte is lost or doubled on the way: what was read from a
// socket before the move reached the far socket, and the rest still waits in the first.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <string>

#include "../mux/session_fixture.hpp"
#include "tether/relay/splice.hpp"

namespace tether::relay {
namespace splice_move {
namespace {

using asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// A pattern whose every byte depends on its offset: a lost or doubled byte shifts it.
std::string bulk_pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 + i / 4093);
  return s;
}

// Writes all of `data` to `s`; `written` counts as it goes.
asio::awaitable<asio::error_code> write_everything(tcp::socket& s, std::string_view data,
                                                   std::size_t& written) {
  while (written < data.size()) {
    auto [ec, n] = co_await s.async_write_some(
        asio::buffer(data.data() + written, data.size() - written), use_tuple);
    if (ec) co_return ec;
    written += n;
  }
  co_return asio::error_code{};
}

// Appends what `s` delivers to `out` until EOF (no error) or a failure.
asio::awaitable<asio::error_code> read_everything(tcp::socket& s, std::string& out) {
  std::string buf(64 * 1024, '\0');
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
    out.append(buf.data(), n);
    if (ec == asio::error::eof) co_return asio::error_code{};
    if (ec) co_return ec;
  }
}

// Reads exactly `n` bytes from `s` into `out`.
asio::awaitable<asio::error_code> read_exactly_n(tcp::socket& s, std::size_t n, std::string& out) {
  out.assign(n, '\0');
  auto [ec, got] = co_await asio::async_read(s, asio::buffer(out), use_tuple);
  out.resize(got);
  co_return ec;
}

// Bytes waiting in `s` right now, without waiting: 0 if none.
std::size_t waiting_bytes(tcp::socket& s) {
  char buf[4096];
  std::size_t total = 0;
  for (;;) {
    const auto n = ::recv(s.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return total;
    total += static_cast<std::size_t>(n);
  }
}

class SpliceMoveTest : public mux::testing::session_fixture {
 protected:
  // The client's side: `app` is the local application, `client_sock` the connection the
  // client splices. The server's side: `device_sock` is spliced, `device` is the device.
  tcp::socket app{io}, client_sock{io}, device_sock{io}, device{io};
  std::unique_ptr<mux::channel> near, far;
  buffer_pool client_pool, server_pool;
  move_policy policy;
  int lane_asked = 0;
  // What the coroutines of a test write and read: members, since a pending read completes
  // (aborted) only in TearDown(), after the test body's locals are gone.
  std::string sent, at_device, at_app, rest;
  std::size_t written = 0;

  // A session pair (with or without lanes), one stream accepted movable, two socket pairs.
  void set_up(bool lanes) {
    mux::session_settings settings;
    settings.lanes = lanes;
    auto pair = connect_pair(settings, [&](mux::incoming_stream in) { far = in.accept(true); });
    client_ = pair.client;
    server_ = pair.server;
    ASSERT_EQ(client_->lanes(), lanes);
    auto opened = start(client_->open(mux::target{"dev-1", 22, mux::protocol::tcp, {}}));
    ASSERT_TRUE(run_until([&] { return opened->has_value() && far; }));
    ASSERT_FALSE(opened->value().first) << opened->value().first.message();
    near = std::move(opened->value().second);
    ASSERT_TRUE(near);
    ASSERT_EQ(near->can_move(), lanes);

    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    app.connect(acceptor.local_endpoint());
    acceptor.accept(client_sock);
    device.connect(acceptor.local_endpoint());
    acceptor.accept(device_sock);

    policy.bulk_bytes = 64 * 1024;
    policy.bulk_period = std::chrono::milliseconds(10'000);
    policy.lane_ready = [this] {
      ++lane_asked;
      return lane_ready_;
    };
  }

  void TearDown() override {
    asio::error_code ignored;
    for (auto* s : {&app, &client_sock, &device_sock, &device}) s->close(ignored);
    session_fixture::TearDown();
  }

  std::shared_ptr<mux::session> client_, server_;
  bool lane_ready_ = true;
};

// A move in the middle of a bulk upload, checked end to end. `total` bytes are offered by
// the application; the client's splice must stop early, well before their end.
TEST_F(SpliceMoveTest, ABulkUploadMovesWithNoByteLostAndBothSocketsOpen) {
  ASSERT_NO_FATAL_FAILURE(set_up(true));
  const std::size_t total = 4u << 20;
  sent = bulk_pattern(total);

  auto server = start(splice(device_sock, *far, server_pool));
  auto client = start(splice(client_sock, *near, client_pool, &policy));
  auto writer = start(write_everything(app, sent, written));
  auto reader = start(read_everything(device, at_device));

  // The server's splice stops at the client's MOVE; its caller answers with its own.
  ASSERT_TRUE(run_until([&] { return server->has_value(); })) << "the server never saw a MOVE";
  const auto s = server->value();
  EXPECT_TRUE(s.moved);
  EXPECT_FALSE(s.error) << s.error.message();
  EXPECT_TRUE(device_sock.is_open()) << "the server closed the socket of a moved stream";
  auto answered = start(far->send_move(s.token));
  ASSERT_TRUE(run_until([&] { return client->has_value() && answered->has_value(); }))
      << "the client's splice never saw the answer";
  EXPECT_FALSE(answered->value()) << answered->value().message();
  const auto c = client->value();

  EXPECT_TRUE(c.moved);
  EXPECT_FALSE(c.error) << c.error.message();
  EXPECT_EQ(c.token, s.token) << "the two sides moved under different tokens";
  EXPECT_NE(c.token, wire::move_token{}) << "the token was never chosen";
  EXPECT_TRUE(client_sock.is_open()) << "the client closed the socket of a moved stream";
  EXPECT_TRUE(lane_asked > 0);

  // The move came once the stream was bulk, long before the application's last byte.
  EXPECT_GE(c.to_channel, policy.bulk_bytes);
  EXPECT_LT(c.to_channel, total);
  EXPECT_EQ(c.from_channel, 0u);
  EXPECT_EQ(s.to_channel, 0u);
  // Every byte the client read went out on the stream and into the device's socket.
  EXPECT_EQ(s.from_channel, c.to_channel);
  ASSERT_TRUE(run_until([&] { return at_device.size() >= s.from_channel; }))
      << at_device.size() << " of " << s.from_channel << " bytes reached the device";
  ASSERT_TRUE(settle());
  EXPECT_EQ(at_device.size() + waiting_bytes(device), s.from_channel)
      << "the device got bytes the splice did not count";
  EXPECT_TRUE(at_device == std::string_view(sent).substr(0, at_device.size()))
      << "the bytes before the move are not a prefix of what was sent";
  EXPECT_FALSE(reader->has_value()) << "the device's connection ended";

  // The rest of the upload still waits in the client's socket, from the first byte the
  // splice left there: nothing was read and dropped.
  const auto rest_size = total - c.to_channel;
  auto rest_read = start(read_exactly_n(client_sock, rest_size, rest));
  ASSERT_TRUE(run_until([&] { return rest_read->has_value() && writer->has_value(); }));
  EXPECT_FALSE(rest_read->value()) << rest_read->value().message();
  EXPECT_FALSE(writer->value()) << writer->value().message();
  EXPECT_EQ(written, total);
  ASSERT_EQ(rest.size(), rest_size);
  EXPECT_TRUE(rest == std::string_view(sent).substr(c.to_channel))
      << "the bytes left in the socket do not continue where the stream stopped";

  // The stream is gone from both sessions, which go on.
  ASSERT_TRUE(settle());
  EXPECT_EQ(client_->stream_count(), 0u);
  EXPECT_EQ(server_->stream_count(), 0u);
  EXPECT_FALSE(client_->closed());
  EXPECT_FALSE(server_->closed());
}

// The stream turns bulk in the download direction: the client's splice moves it all the
// same, and what the server sent before its answer reaches the application.
TEST_F(SpliceMoveTest, ABulkDownloadMovesWithNoByteLostAndBothSocketsOpen) {
  ASSERT_NO_FATAL_FAILURE(set_up(true));
  const std::size_t total = 4u << 20;
  sent = bulk_pattern(total);

  auto server = start(splice(device_sock, *far, server_pool));
  auto client = start(splice(client_sock, *near, client_pool, &policy));
  auto writer = start(write_everything(device, sent, written));
  auto reader = start(read_everything(app, at_app));

  ASSERT_TRUE(run_until([&] { return server->has_value(); })) << "the server never saw a MOVE";
  const auto s = server->value();
  EXPECT_TRUE(s.moved);
  EXPECT_FALSE(s.error) << s.error.message();
  EXPECT_TRUE(device_sock.is_open());
  auto answered = start(far->send_move(s.token));
  ASSERT_TRUE(run_until([&] { return client->has_value() && answered->has_value(); }))
      << "the client's splice never saw the answer";
  EXPECT_FALSE(answered->value()) << answered->value().message();
  const auto c = client->value();

  EXPECT_TRUE(c.moved);
  EXPECT_FALSE(c.error) << c.error.message();
  EXPECT_EQ(c.token, s.token);
  EXPECT_TRUE(client_sock.is_open());
  EXPECT_GE(s.to_channel, policy.bulk_bytes);
  EXPECT_LT(s.to_channel, total);
  EXPECT_EQ(c.to_channel, 0u);
  // Everything the server read from the device, and sent before its MOVE, was delivered.
  EXPECT_EQ(c.from_channel, s.to_channel);
  ASSERT_TRUE(run_until([&] { return at_app.size() >= c.from_channel; }))
      << at_app.size() << " of " << c.from_channel << " bytes reached the application";
  ASSERT_TRUE(settle());
  EXPECT_EQ(at_app.size() + waiting_bytes(app), c.from_channel);
  EXPECT_TRUE(at_app == std::string_view(sent).substr(0, at_app.size()));
  EXPECT_FALSE(reader->has_value()) << "the application's connection ended";

  const auto rest_size = total - s.to_channel;
  auto rest_read = start(read_exactly_n(device_sock, rest_size, rest));
  ASSERT_TRUE(run_until([&] { return rest_read->has_value() && writer->has_value(); }));
  EXPECT_FALSE(rest_read->value()) << rest_read->value().message();
  EXPECT_FALSE(writer->value()) << writer->value().message();
  ASSERT_EQ(rest.size(), rest_size);
  EXPECT_TRUE(rest == std::string_view(sent).substr(s.to_channel));

  ASSERT_TRUE(settle());
  EXPECT_EQ(client_->stream_count(), 0u);
  EXPECT_EQ(server_->stream_count(), 0u);
}

// An upload of `total` bytes that must not move: it ends as a plain transfer, with FIN
// both ways (the device answers with a half-close of its own) and every byte delivered.
class SpliceNoMoveTest : public SpliceMoveTest {
 protected:
  void transfer_without_moving() {
    const std::size_t total = 1u << 20;
    sent = bulk_pattern(total);

    auto server = start(splice(device_sock, *far, server_pool));
    auto client = start(splice(client_sock, *near, client_pool, &policy));
    auto writer = start(write_everything(app, sent, written));
    auto device_reader = start(read_everything(device, at_device));
    auto app_reader = start(read_everything(app, at_app));

    ASSERT_TRUE(run_until([&] { return writer->has_value(); }));
    EXPECT_FALSE(writer->value()) << writer->value().message();
    app.shutdown(tcp::socket::shutdown_send);
    ASSERT_TRUE(run_until([&] { return device_reader->has_value(); }))
        << "the upload's FIN never reached the device";
    EXPECT_FALSE(device_reader->value()) << device_reader->value().message();
    EXPECT_EQ(at_device.size(), total);
    EXPECT_TRUE(at_device == sent);
    device.shutdown(tcp::socket::shutdown_send);

    ASSERT_TRUE(run_until(
        [&] { return client->has_value() && server->has_value() && app_reader->has_value(); }));
    const auto c = client->value();
    const auto s = server->value();
    EXPECT_FALSE(c.moved);
    EXPECT_FALSE(s.moved);
    EXPECT_FALSE(c.error) << c.error.message();
    EXPECT_FALSE(s.error) << s.error.message();
    EXPECT_EQ(c.to_channel, total);
    EXPECT_EQ(s.from_channel, total);
    EXPECT_FALSE(app_reader->value()) << "the application did not see an orderly end";
    EXPECT_TRUE(at_app.empty());
    EXPECT_FALSE(client_sock.is_open()) << "a stream that ended keeps its socket";
    EXPECT_FALSE(device_sock.is_open());
    EXPECT_FALSE(near->moved_away());
    EXPECT_FALSE(far->moved_away());
    ASSERT_TRUE(settle());
    EXPECT_EQ(client_->stream_count(), 0u);
    EXPECT_EQ(server_->stream_count(), 0u);
  }
};

TEST_F(SpliceNoMoveTest, NoLaneReadyMeansNoMove) {
  ASSERT_NO_FATAL_FAILURE(set_up(true));
  lane_ready_ = false;
  ASSERT_NO_FATAL_FAILURE(transfer_without_moving());
  EXPECT_GT(lane_asked, 0) << "the bulk stream never asked for a lane";
}

TEST_F(SpliceNoMoveTest, AStreamThatCannotMoveStaysWithoutAskingForALane) {
  ASSERT_NO_FATAL_FAILURE(set_up(false));
  lane_ready_ = true;
  ASSERT_NO_FATAL_FAILURE(transfer_without_moving());
  EXPECT_EQ(lane_asked, 0);
}

// A quiet stream stays put: below bulk_bytes nothing asks for a lane.
TEST_F(SpliceNoMoveTest, ASmallTransferNeverAsksForALane) {
  ASSERT_NO_FATAL_FAILURE(set_up(true));
  policy.bulk_bytes = 64u << 20;
  ASSERT_NO_FATAL_FAILURE(transfer_without_moving());
  EXPECT_EQ(lane_asked, 0);
}

}  // namespace
}  // namespace splice_move
}  // namespace tether::relay
