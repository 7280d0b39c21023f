#pragma once
// What the usage text, the bash completion and the man page read from the CLI11 definitions:
// the commands and options a user may type. Reading them from the App itself, not from a
// copy, is what keeps those three from drifting away from the real flags.

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace tether::cli {

/// Subcommands a user is meant to see, in the order they were added (a command in the group
/// "" is hidden, as in `--help`).
inline std::vector<const CLI::App*> visible_subcommands(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App* sub) { return !sub->get_group().empty(); });
}

/// Named options (`-L`, `--ca`, `--help`) a user is meant to see, in the order they were added.
inline std::vector<const CLI::Option*> visible_named_options(const CLI::App& app) {
  return app.get_options(
      [](const CLI::Option* opt) { return opt->nonpositional() && !opt->get_group().empty(); });
}

/// Positional arguments (connect's `url`), in order.
inline std::vector<const CLI::Option*> positionals(const CLI::App& app) {
  return app.get_options([](const CLI::Option* opt) { return !opt->nonpositional(); });
}

/// Every spelling of a named option: `-i`, `--identity`.
inline std::vector<std::string> spellings(const CLI::Option& opt) {
  std::vector<std::string> out;
  for (const auto& s : opt.get_snames()) out.push_back("-" + s);
  for (const auto& l : opt.get_lnames()) out.push_back("--" + l);
  return out;
}

/// A flag stands alone; any other option takes the next word as its value.
inline bool takes_value(const CLI::Option& opt) {
  return opt.get_expected_max() != 0;
}

/// The command as typed: "tether map add".
inline std::string command_path(const CLI::App& app) {
  const auto* parent = app.get_parent();
  return parent ? command_path(*parent) + " " + app.get_name() : app.get_name();
}

}  // namespace tether::cli
