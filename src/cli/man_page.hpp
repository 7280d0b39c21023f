#pragma once
// `tether man`: the manual page (roff, section 1) written from the CLI11 definitions.

#include <CLI/CLI.hpp>
#include <ostream>

#include "commands.hpp"

namespace tether::cli {

/// Writes tether(1) in man(7) roff: every visible command with its options, their value
/// types and defaults, and the exit codes.
void write_man_page(const CLI::App& root, std::ostream& out);

/// Adds the hidden `man` command, which prints the page for the App it was added to.
void add_man_command(CLI::App& app, action& run);

}  // namespace tether::cli
