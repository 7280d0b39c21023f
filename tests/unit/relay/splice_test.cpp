// splice() between a real loopback socket and a stream of a real session pair: how each
// side's end reaches the other.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <asio/ip/tcp.hpp>

#include "../mux/session_fixture.hpp"
#include "tether/relay/splice.hpp"

namespace tether::relay {
namespace {

using asio::ip::tcp;

class SpliceTest : public mux::testing::session_fixture {};

// The far end half-closes and then resets the stream while the local peer stays silent
// (a device that never answers nor hangs up): the reset must still end the splice and
// reach the local peer, instead of leaving both waiting for the peer to speak.
TEST_F(SpliceTest, AResetAfterTheFarEndsFinEndsTheSpliceWhileTheLocalPeerIsSilent) {
  std::unique_ptr<mux::channel> far;
  auto pair = connect_pair({}, [&](mux::incoming_stream in) { far = in.accept(); });
  auto opened = start(pair.client->open(mux::target{"dev", 22, mux::protocol::tcp}));
  ASSERT_TRUE(run_until([&] { return opened->has_value() && far; }));
  auto near = std::move(opened->value().second);
  ASSERT_TRUE(near);

  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket local(io), peer(io);
  peer.connect(acceptor.local_endpoint());
  acceptor.accept(local);

  buffer_pool pool;
  auto done = start(splice(local, *near, pool));
  auto fin = start(far->send_eof());
  ASSERT_TRUE(run_until([&] { return fin->has_value(); }));

  // The FIN arrives as end-of-stream at the silent peer.
  peer.non_blocking(true);
  char byte = 0;
  ASSERT_TRUE(run_until([&] {
    return ::recv(peer.native_handle(), &byte, 1, MSG_DONTWAIT) == 0;
  }));
  EXPECT_FALSE(done->has_value());

  far->reset(errc::stream_reset);
  ASSERT_TRUE(run_until([&] { return done->has_value(); }))
      << "the splice still waits on a peer that will never speak";
  EXPECT_EQ(done->value().error, make_error_code(errc::stream_reset));
  EXPECT_FALSE(local.is_open());
}

}  // namespace
}  // namespace tether::relay
