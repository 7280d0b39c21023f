#include "tether/server/worker_pool.hpp"

#include <gtest/gtest.h>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tether::server {
namespace {

using namespace std::chrono_literals;

TEST(WorkerPool, HandsOutWorkersRoundRobin) {
  worker_pool pool(3);
  ASSERT_EQ(pool.size(), 3u);
  std::vector<std::size_t> got;
  for (int i = 0; i < 7; ++i) got.push_back(pool.next());
  EXPECT_EQ(got, (std::vector<std::size_t>{0, 1, 2, 0, 1, 2, 0}));
}

TEST(WorkerPool, RoundRobinFromManyThreadsGivesEachWorkerItsShare) {
  worker_pool pool(4);
  std::vector<std::atomic<int>> per_worker(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) ++per_worker[pool.next()];
    });
  for (auto& t : threads) t.join();
  for (auto& n : per_worker) EXPECT_EQ(n.load(), 1000);
}

TEST(WorkerPool, AtLeastOneWorker) {
  worker_pool pool(0);
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_EQ(pool.next(), 0u);
  EXPECT_GE(worker_pool::default_count(), 1u);
}

TEST(WorkerPool, EachWorkerRunsOnAThreadOfItsOwnAndWorkerZeroOnTheCaller) {
  worker_pool pool(3);
  std::mutex m;
  std::vector<std::thread::id> ran_on(3);
  std::atomic<int> ran{0};
  for (std::size_t i = 0; i < pool.size(); ++i) {
    asio::post(pool.executor(i), [&, i] {
      {
        std::lock_guard lock(m);
        ran_on[i] = std::this_thread::get_id();
      }
      if (++ran == 3) pool.release();
    });
  }
  pool.run();  // returns: every worker ran out of work after release()
  EXPECT_EQ(ran, 3);
  EXPECT_EQ(ran_on[0], std::this_thread::get_id());
  EXPECT_EQ(std::set<std::thread::id>(ran_on.begin(), ran_on.end()).size(), 3u);
}

TEST(WorkerPool, IdleWorkersWaitForWorkUntilReleased) {
  worker_pool pool(2);
  std::atomic<bool> late_work_done{false};
  // Worker 1 has nothing to do for a while; it must still be there when work comes.
  asio::steady_timer later(pool.context(0), 50ms);
  later.async_wait([&](const asio::error_code&) {
    asio::post(pool.executor(1), [&] {
      late_work_done = true;
      pool.release();
    });
  });
  pool.run();
  EXPECT_TRUE(late_work_done);
}

TEST(WorkerPool, ReleaseLetsEveryWorkerFinishWhatItHas) {
  worker_pool pool(3);
  std::atomic<int> finished{0};
  std::vector<std::unique_ptr<asio::steady_timer>> timers;
  for (std::size_t i = 0; i < pool.size(); ++i) {
    timers.push_back(std::make_unique<asio::steady_timer>(pool.context(i), 30ms));
    timers.back()->async_wait([&](const asio::error_code& ec) {
      if (!ec) ++finished;
    });
  }
  pool.release();  // before run(): each worker still ends its timer first
  pool.run();
  EXPECT_EQ(finished, 3);
}

TEST(WorkerPool, StopReachesEveryWorkerAtOnce) {
  worker_pool pool(3);
  std::atomic<int> fired{0};
  std::vector<std::unique_ptr<asio::steady_timer>> timers;
  for (std::size_t i = 0; i < pool.size(); ++i) {
    timers.push_back(std::make_unique<asio::steady_timer>(pool.context(i), 1h));
    timers.back()->async_wait([&](const asio::error_code&) { ++fired; });
  }
  std::atomic<int> started{0};
  for (std::size_t i = 0; i < pool.size(); ++i)
    asio::post(pool.executor(i), [&] {
      if (++started == 3) pool.stop();  // from worker i's own thread
    });
  const auto t0 = std::chrono::steady_clock::now();
  pool.run();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(started, 3);
  EXPECT_EQ(fired, 0);  // stopped, not cancelled: the waits are dropped with the pool
}

TEST(WorkerPool, StopFromAnotherThread) {
  worker_pool pool(2);
  std::thread stopper([&] {
    std::this_thread::sleep_for(20ms);
    pool.stop();
  });
  pool.run();  // nothing to do, but not released: only stop() ends it
  stopper.join();
}

TEST(WorkerPool, AFailingWorkerStopsTheOthersAndRunRethrows) {
  worker_pool pool(3);
  asio::post(pool.executor(2), [] { throw std::runtime_error("worker 2 broke"); });
  try {
    pool.run();
    FAIL() << "run() returned normally";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "worker 2 broke");
  }
}

// A handler pending on one loop holds the last reference to an I/O object of another.
// Destroying the loops one after the other would free that object's service first; the
// pool drops every loop's handlers before destroying any loop (ASan would see the
// use after free).
TEST(WorkerPool, PendingWorkThatHoldsObjectsOfOtherLoopsIsDestroyedSafely) {
  for (std::size_t owner = 0; owner < 2; ++owner) {
    auto pool = std::make_unique<worker_pool>(2);
    auto timer = std::make_shared<asio::steady_timer>(pool->context(owner), 1h);
    timer->async_wait([timer](const asio::error_code&) {});
    const std::size_t other = 1 - owner;
    auto idle = std::make_shared<asio::steady_timer>(pool->context(other), 1h);
    idle->async_wait([idle, timer](const asio::error_code&) {});
    timer.reset();
    idle.reset();
    pool.reset();  // never run
  }
}

}  // namespace
}  // namespace tether::server
