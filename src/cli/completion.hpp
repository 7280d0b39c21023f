#pragma once
// `tether completion bash`: a bash completion script written from the CLI11 definitions.

#include <CLI/CLI.hpp>
#include <ostream>

#include "commands.hpp"

namespace tether::cli {

/// Writes a bash completion script for every visible command and option of `root`:
/// commands after commands, options after `-`, choices or file names after an option that
/// takes a value.
void write_bash_completion(const CLI::App& root, std::ostream& out);

/// Adds the hidden `completion SHELL` command, which prints the script for the App it was
/// added to.
void add_completion_command(CLI::App& app, action& run);

}  // namespace tether::cli
