#include "tether/server/limit_books.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace tether::server {
namespace {

using namespace std::chrono_literals;

server_limits small_limits() {
  server_limits l;
  l.max_pending_handshakes = 3;
  l.max_pending_handshakes_per_source = 2;
  l.max_sessions_per_credential = 2;
  l.max_sessions_per_source = 3;
  l.max_streams = 4;
  l.max_streams_per_credential = 3;
  l.max_auth_failures_per_source = 2;
  l.auth_failure_window = 1000ms;
  return l;
}

TEST(LimitBooks, PendingHandshakesPerSourceAndServerWide) {
  limit_books books;
  const auto l = small_limits();
  EXPECT_EQ(books.begin_handshake("10.0.0.1", l), "");
  EXPECT_EQ(books.begin_handshake("10.0.0.1", l), "");
  EXPECT_EQ(books.begin_handshake("10.0.0.1", l), "max_pending_handshakes_per_source (2) reached");
  EXPECT_EQ(books.begin_handshake("10.0.0.2", l), "");
  EXPECT_EQ(books.begin_handshake("10.0.0.3", l), "max_pending_handshakes (3) reached");
  EXPECT_EQ(books.pending_handshakes(), 3u);
  books.end_handshake("10.0.0.1");
  EXPECT_EQ(books.begin_handshake("10.0.0.3", l), "");
  EXPECT_EQ(books.begin_handshake("10.0.0.1", l), "max_pending_handshakes (3) reached");
}

TEST(LimitBooks, BadTokensBlockASourceForTheWindow) {
  limit_books books;
  const auto l = small_limits();
  const auto t0 = limit_books::clock::now();
  books.note_auth_failure("10.0.0.9", l, t0);
  EXPECT_EQ(books.begin_handshake("10.0.0.9", l, t0), "");
  books.end_handshake("10.0.0.9");
  books.note_auth_failure("10.0.0.9", l, t0 + 10ms);
  EXPECT_EQ(books.begin_handshake("10.0.0.9", l, t0 + 20ms),
            "max_auth_failures_per_source (2 within 1000 ms) reached");
  EXPECT_EQ(books.begin_handshake("10.0.0.8", l, t0 + 20ms), "") << "only that source";
  books.end_handshake("10.0.0.8");
  // The window counts from the first failure; once it has passed the source is let in.
  EXPECT_EQ(books.begin_handshake("10.0.0.9", l, t0 + 1000ms), "");
}

TEST(LimitBooks, SessionsPerCredentialAndPerSource) {
  limit_books books;
  const auto l = small_limits();
  EXPECT_EQ(books.begin_session("10.0.0.1", "laptop", l), "");
  EXPECT_EQ(books.begin_session("10.0.0.2", "laptop", l), "");
  EXPECT_EQ(books.begin_session("10.0.0.3", "laptop", l),
            "max_sessions_per_credential (2) reached for credential 'laptop'");
  EXPECT_EQ(books.begin_session("10.0.0.1", "ops", l), "");
  EXPECT_EQ(books.begin_session("10.0.0.1", "ci", l), "");
  EXPECT_EQ(books.begin_session("10.0.0.1", "ci", l),
            "max_sessions_per_source (3) reached for 10.0.0.1");
  EXPECT_EQ(books.sessions_of_credential("laptop"), 2u);
  books.end_session("10.0.0.1", "laptop");
  EXPECT_EQ(books.sessions_of_credential("laptop"), 1u);
  EXPECT_EQ(books.begin_session("10.0.0.1", "ci", l), "");
}

TEST(LimitBooks, StreamsServerWideAndPerCredential) {
  limit_books books;
  const auto l = small_limits();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(books.begin_stream("laptop", l), "");
  EXPECT_EQ(books.begin_stream("laptop", l),
            "max_streams_per_credential (3) reached for credential 'laptop'");
  EXPECT_EQ(books.begin_stream("ops", l), "");
  EXPECT_EQ(books.begin_stream("ops", l), "max_streams (4) reached on the server");
  EXPECT_EQ(books.streams(), 4u);
  EXPECT_EQ(books.end_stream("ops"), 3u);
  EXPECT_EQ(books.end_stream("laptop"), 2u);
  EXPECT_EQ(books.end_stream("laptop"), 1u);
  EXPECT_EQ(books.end_stream("laptop"), 0u);
}

// Workers check a limit and take the place it allows in one step: however many threads
// race for the last places, exactly the limit's number get one.
TEST(LimitBooks, ThreadsRacingForTheLastPlacesNeverGetMoreThanTheLimit) {
  limit_books books;
  auto l = small_limits();
  l.max_sessions_per_credential = 50;
  l.max_sessions_per_source = 1'000'000;
  l.max_streams = 70;
  l.max_streams_per_credential = 1'000'000;
  std::atomic<int> sessions{0}, streams{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      const std::string source = "10.0.0." + std::to_string(t);
      for (int i = 0; i < 500; ++i) {
        if (books.begin_session(source, "shared", l).empty()) ++sessions;
        if (books.begin_stream("shared", l).empty()) ++streams;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(sessions, 50);
  EXPECT_EQ(streams, 70);
  EXPECT_EQ(books.sessions_of_credential("shared"), 50u);
  EXPECT_EQ(books.streams(), 70u);
}

}  // namespace
}  // namespace tether::server
