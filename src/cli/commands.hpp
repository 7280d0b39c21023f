#pragma once
// The subcommands. Each registers its options on `app` and sets `action` to what runs when
// the subcommand is chosen; the action returns the process exit code.

#include <CLI/CLI.hpp>
#include <functional>

namespace tether::cli {

using action = std::function<int()>;

// Exit codes shared by the subcommands.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;
inline constexpr int exit_bad_credentials = 3;
inline constexpr int exit_untrusted_server = 4;  // TLS certificate or SSH host key

void add_server_command(CLI::App& app, action& run);
void add_connect_command(CLI::App& app, action& run);
void add_token_command(CLI::App& app, action& run);
void add_up_command(CLI::App& app, action& run);

}  // namespace tether::cli
