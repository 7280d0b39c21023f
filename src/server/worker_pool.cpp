#include "tether/server/worker_pool.hpp"

#include <spdlog/spdlog.h>

#include <asio/steady_timer.hpp>

namespace tether::server {

worker_pool::worker_pool(std::size_t count) {
  count = std::max<std::size_t>(count, 1);
  workers_.reserve(count);
  guards_.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    workers_.push_back(std::make_unique<loop>());
    guards_.emplace_back(workers_.back()->get_executor());
    // Each loop opens its descriptors (epoll, its wake-up eventfd and timerfd) now rather
    // than when its first session comes: what the server holds is settled at startup.
    asio::steady_timer open_reactor(*workers_.back());
  }
}

worker_pool::~worker_pool() {
  stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  // A pending handler of one loop may hold the last reference to an object that belongs to
  // another (a session's socket, the server's acceptor): every loop drops its handlers
  // while all of them still exist, and only then are they destroyed.
  for (auto& w : workers_) w->shutdown();
  {
    std::lock_guard lock(guards_mutex_);
    guards_.clear();
  }
  while (!workers_.empty()) workers_.pop_back();
}

std::size_t worker_pool::default_count() noexcept {
  return std::max<std::size_t>(std::thread::hardware_concurrency(), 1);
}

asio::io_context& worker_pool::context(std::size_t i) noexcept {
  return *workers_[i];
}

asio::any_io_executor worker_pool::executor(std::size_t i) const noexcept {
  return workers_[i]->get_executor();
}

std::size_t worker_pool::next() noexcept {
  return next_.fetch_add(1, std::memory_order_relaxed) % workers_.size();
}

void worker_pool::run() {
  threads_.reserve(workers_.size() - 1);
  for (std::size_t i = 1; i < workers_.size(); ++i)
    threads_.emplace_back([this, i] { run_worker(i); });
  run_worker(0);
  for (auto& t : threads_) t.join();
  std::lock_guard lock(failure_mutex_);
  if (failure_) std::rethrow_exception(failure_);
}

void worker_pool::run_worker(std::size_t i) noexcept {
  try {
    workers_[i]->run();
  } catch (...) {
    // One worker failing leaves the server without the sessions it held: everything
    // stops, and run() reports the failure once the threads are joined.
    {
      std::lock_guard lock(failure_mutex_);
      if (!failure_) failure_ = std::current_exception();
    }
    if (i != 0) spdlog::error("worker {} failed; stopping every worker", i);
    stop();
  }
}

void worker_pool::release() noexcept {
  std::lock_guard lock(guards_mutex_);
  for (auto& g : guards_) g.reset();
}

void worker_pool::stop() noexcept {
  release();
  for (auto& w : workers_) w->stop();
}

}  // namespace tether::server
