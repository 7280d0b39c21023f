#pragma once
// The front door: what `tether` alone, `tether conect` or `tether map` print instead of
// CLI11's "A subcommand is required" — the commands there are, and the one that was meant.

#include <CLI/CLI.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tether::cli {

/// Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`, ignoring case.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// The names nearest to `typed` by edit distance, if they are close enough to be what was
/// meant (at most 2 edits, and at most one per three letters); several only on a tie.
std::vector<std::string> nearest_names(std::string_view typed,
                                       const std::vector<std::string>& names);

/// "Usage: tether map COMMAND [OPTIONS]", then each visible command of `app` with its one-line
/// description.
void print_command_list(const CLI::App& app, std::ostream& out);

/// After a failed parse: if the deepest command the user reached needs a subcommand and got
/// none (`tether`, `tether conect`, `tether map`), prints the word or option that was wrong,
/// the nearest command to that word, and the list of commands there to `err`, and returns
/// true. Otherwise returns false and leaves the error to CLI11.
bool explain_missing_command(const CLI::App& app, int argc, const char* const* argv,
                             std::ostream& err);

}  // namespace tether::cli
