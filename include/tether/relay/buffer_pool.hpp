#pragma once
// Read buffers lent to relay directions only while they hold bytes: an idle direction waits
// for readiness without a buffer, then borrows one for the read and returns it after.

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace tether::relay {

class buffer_pool {
 public:
  /// `keep`: how many free buffers to hold on to between uses.
  explicit buffer_pool(std::size_t buffer_size = 256 * 1024, std::size_t keep = 16)
      : size_(buffer_size), keep_(keep) {}
  buffer_pool(const buffer_pool&) = delete;
  buffer_pool& operator=(const buffer_pool&) = delete;

  class lease {
   public:
    lease(lease&& o) noexcept : pool_(o.pool_), buf_(std::move(o.buf_)) {}
    lease& operator=(lease&&) = delete;
    ~lease() {
      if (buf_) pool_->give_back(std::move(buf_));
    }
    std::span<std::byte> space() noexcept { return {buf_.get(), pool_->size_}; }

   private:
    friend class buffer_pool;
    lease(buffer_pool* p, std::unique_ptr<std::byte[]> b) : pool_(p), buf_(std::move(b)) {}
    buffer_pool* pool_;
    std::unique_ptr<std::byte[]> buf_;
  };

  lease take() {
    if (free_.empty()) return lease(this, std::make_unique_for_overwrite<std::byte[]>(size_));
    auto b = std::move(free_.back());
    free_.pop_back();
    return lease(this, std::move(b));
  }

  std::size_t buffer_size() const noexcept { return size_; }

 private:
  void give_back(std::unique_ptr<std::byte[]> b) {
    if (free_.size() < keep_) free_.push_back(std::move(b));
  }
  std::size_t size_;
  std::size_t keep_;
  std::vector<std::unique_ptr<std::byte[]>> free_;
};

}  // namespace tether::relay
