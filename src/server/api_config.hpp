#pragma once
// The HTTP API's part of the server config: `api_listen`, `state_dir`, the `[api]` table
// of bounds and the `[[api_key]]` sections (docs/CONFIG.md).

#include <functional>
#include <string>

#include "tether/server/config.hpp"
#include "tether/toml_check.hpp"

namespace tether::server {

// The keys this part adds at the top level of the config.
inline constexpr std::array<std::string_view, 4> api_top_level_keys{"api_listen", "state_dir",
                                                                    "api", "api_key"};

/// Reads an [[api_key]] section: the same name, token_sha256 and allow as a [[credential]].
using key_parser = std::function<credential(const toml::table&, const std::string& at)>;

/// Fills `api` from the config's root table. Throws config_error.
void parse_api_settings(const toml_checker& c, const toml::table& root, api_settings& api,
                        const key_parser& parse_key);

/// True for addresses that never leave the machine: 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host);

}  // namespace tether::server
