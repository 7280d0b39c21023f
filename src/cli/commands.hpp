#pragma once
// The subcommands. Each registers its options on `app` and sets `action` to what runs when
// the subcommand is chosen; the action returns the process exit code.

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace tether::cli {

using action = std::function<int()>;

// Exit codes shared by the subcommands.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;
inline constexpr int exit_bad_credentials = 3;
inline constexpr int exit_untrusted_server = 4;  // TLS certificate or SSH host key
inline constexpr int exit_interrupted = 130;     // a second Ctrl-C: 128 + SIGINT, as shells say

// What each exit code means, for `--help` and the man page: one table, so they agree.
struct exit_code_meaning {
  int code;
  const char* meaning;
};
inline constexpr exit_code_meaning exit_code_meanings[] = {
    {exit_ok, "ok"},
    {exit_failure, "runtime failure"},
    {exit_usage, "usage error: a wrong command, option, value or config file"},
    {exit_bad_credentials, "the server rejected the credential (token, key or certificate)"},
    {exit_untrusted_server, "the server could not be trusted (its certificate or SSH host key)"},
    {exit_interrupted, "stopped by a second Ctrl-C before connections finished"},
};

void add_server_command(CLI::App& app, action& run);
/// `command`: the words after "--" on the command line, run once the tunnel is ready.
void add_connect_command(CLI::App& app, action& run, std::vector<std::string> command);
void add_token_command(CLI::App& app, action& run);
void add_up_command(CLI::App& app, action& run);
/// `tether devices`: what the token may reach (the server's device catalog).
void add_devices_command(CLI::App& app, action& run);
/// `tether agent`: a device's side of an agent device (docs/AGENTS.md).
void add_agent_command(CLI::App& app, action& run);
void add_apikey_command(CLI::App& app, action& run);
/// `tether send`: one message through the server's HTTP API (docs/API.md).
void add_send_command(CLI::App& app, action& run);
void add_webhook_command(CLI::App& app, action& run);
void add_messages_command(CLI::App& app, action& run);

}  // namespace tether::cli
