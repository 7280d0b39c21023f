#pragma once
// A value or the reason there is none. Used where an operation can fail in expected ways
// (parsing user input, dialing) and the caller wants a message, not an exception.

#include <string>
#include <utility>
#include <variant>

#include "tether/errc.hpp"

namespace tether {

struct error {
  std::string message;
  errc code = errc::internal;  // lets callers decide (retry or not) without reading words
};

template <class T>
class result {
 public:
  result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose
  result(error e) : v_(std::move(e)) {}      // NOLINT

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const std::string& message() const { return std::get<1>(v_).message; }
  errc code() const { return std::get<1>(v_).code; }

 private:
  std::variant<T, error> v_;
};

}  // namespace tether
