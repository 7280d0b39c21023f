#pragma once
// A dialer for tests that hands out a tunnel the test already has.

#include <asio/awaitable.hpp>
#include <memory>

#include "tether/client/dialer.hpp"
#include "tether/mux/tunnel.hpp"

namespace tether::client::testing {

// The outcome of a dial that succeeded with `t`.
inline asio::awaitable<dial_outcome> give(std::shared_ptr<mux::tunnel> t) {
  dial_outcome o;
  o.tunnel = std::move(t);
  co_return o;
}

}  // namespace tether::client::testing
