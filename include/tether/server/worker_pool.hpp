#pragma once
// The server's event loops: N workers, each an io_context of its own run by exactly one
// thread. A session and its streams are given to one worker and live there until they end,
// so nothing on the data path is shared between threads or takes a lock (docs/THREADS.md).
//
// Worker 0 runs on the thread that calls run(): the acceptor, the signals and the server's
// own control (reload, shutdown) live there beside the sessions it is given. The others run
// on threads the pool starts.

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tether::server {

class worker_pool {
 public:
  /// `count` workers (0 is taken as 1). Nothing runs until run().
  explicit worker_pool(std::size_t count);
  /// Stops every worker, joins the threads, then destroys the event loops in two passes:
  /// first every loop drops its pending work (which may free objects that belong to other
  /// loops), then the loops themselves go.
  ~worker_pool();
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  /// The number of CPUs (std::thread::hardware_concurrency), at least 1.
  static std::size_t default_count() noexcept;

  std::size_t size() const noexcept { return workers_.size(); }

  /// Worker `i`'s event loop and its executor (i < size()). Thread-safe.
  asio::io_context& context(std::size_t i) noexcept;
  asio::any_io_executor executor(std::size_t i) const noexcept;

  /// The worker the next session goes to: 0, 1, ..., size()-1, 0, ... Thread-safe.
  std::size_t next() noexcept;

  /// Runs worker 0 on the calling thread and every other worker on a thread of its own,
  /// and returns when all of them have returned: after release() once each has no work
  /// left, or at once after stop(). Rethrows, after every thread is joined, the first
  /// exception that escaped a worker's handlers (the others are stopped then). Once only.
  void run();

  /// From now on a worker with nothing left to do ends instead of waiting for work (a
  /// graceful stop: the sessions drain, then run() returns). Thread-safe; any thread.
  void release() noexcept;

  /// Every worker stops now, leaving its pending work undone (destroyed with the pool).
  /// Thread-safe; any thread.
  void stop() noexcept;

 private:
  // An io_context whose shutdown (destroying pending work) may be called before its
  // destructor, so that the pool can empty every loop before destroying any.
  struct loop : asio::io_context {
    loop() : asio::io_context(1) {}  // one thread runs it: no scheduler lock contention
    using asio::io_context::shutdown;
  };
  using work_guard = asio::executor_work_guard<asio::io_context::executor_type>;

  void run_worker(std::size_t i) noexcept;

  std::vector<std::unique_ptr<loop>> workers_;
  std::mutex guards_mutex_;
  std::vector<work_guard> guards_;  // keep idle workers running until release()
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> next_{0};
  std::mutex failure_mutex_;
  std::exception_ptr failure_;  // the first exception a worker's handler threw
};

}  // namespace tether::server
