#pragma once
// A byte vector whose resize() does not zero the new bytes. A 256 KiB read buffer that is
// zero-filled is resident at once; left alone, only the pages that reads reach cost memory,
// so an idle session holds a few KiB of it instead of all of it.

#include <cstddef>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace tether::mux {

template <typename T>
struct default_init_allocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = default_init_allocator<U>;
  };
  using std::allocator<T>::allocator;
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialised: no zeroing
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using byte_buffer = std::vector<std::byte, default_init_allocator<std::byte>>;

}  // namespace tether::mux
