#pragma once
// A config or tunnels file that cannot be used, with a message that says where and why
// ("server.toml:12: credential[0].allow: expected an array, got a string").

#include <stdexcept>

namespace tether {

struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace tether
