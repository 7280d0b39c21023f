#include "usage.hpp"

#include <algorithm>
#include <cctype>

#include "app_walk.hpp"
#include "tether/printable.hpp"

namespace tether::cli {

namespace {

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

// The command the user got to: follow the parsed subcommands down from the root.
const CLI::App& deepest_parsed(const CLI::App& app) {
  const CLI::App* at = &app;
  for (auto chosen = at->get_subcommands(); !chosen.empty(); chosen = at->get_subcommands())
    at = chosen.front();
  return *at;
}

// What the user typed at `at`, after the commands that lead there: the first word where a
// command of `at` belongs, and the first option `at` does not have (either may be "").
struct typed_at_command {
  std::string word;
  std::string unknown_option;
};

typed_at_command what_was_typed(const CLI::App& at, int argc, const char* const* argv) {
  std::vector<std::string> path;
  for (const auto* a = &at; a->get_parent() != nullptr; a = a->get_parent())
    path.insert(path.begin(), a->get_name());
  int i = 1;
  for (std::size_t matched = 0; i < argc && matched < path.size(); ++i)
    if (argv[i] == path[matched]) ++matched;
  typed_at_command typed;
  for (; i < argc && typed.word.empty(); ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] != '-') {
      typed.word = word;
    } else if (word != "--") {
      const auto name = word.substr(0, word.find('='));
      const auto* opt = at.get_option_no_throw(name);
      if (!opt && typed.unknown_option.empty()) typed.unknown_option = name;
      if (opt && takes_value(*opt) && name == word) ++i;  // `--opt VALUE`: skip the value
    }
  }
  return typed;
}

}  // namespace

std::size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment over three rows: a swap of neighbours ("mpa") costs one edit,
  // as a typist would count it.
  std::vector<std::size_t> before(b.size() + 1), previous(b.size() + 1), current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const bool same = lower(a[i - 1]) == lower(b[j - 1]);
      current[j] =
          std::min({previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (same ? 0 : 1)});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
          lower(a[i - 2]) == lower(b[j - 1]))
        current[j] = std::min(current[j], before[j - 2] + 1);
    }
    std::swap(before, previous);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::vector<std::string> nearest_names(std::string_view typed,
                                       const std::vector<std::string>& names) {
  std::vector<std::string> best;
  std::size_t best_distance = 2;  // more than 2 edits is another word, not a typo
  for (const auto& name : names) {
    const auto d = edit_distance(typed, name);
    const auto allowed = std::max<std::size_t>(1, std::max(typed.size(), name.size()) / 3);
    if (d > allowed || d > best_distance) continue;
    if (d < best_distance) best.clear();
    best_distance = d;
    best.push_back(name);
  }
  return best;
}

void print_command_list(const CLI::App& app, std::ostream& out) {
  const auto subs = visible_subcommands(app);
  out << "Usage: " << command_path(app) << " COMMAND [OPTIONS]\n\nCommands:\n";
  std::size_t width = 0;
  for (const auto* sub : subs) width = std::max(width, sub->get_name().size());
  for (const auto* sub : subs)
    out << "  " << sub->get_name() << std::string(width - sub->get_name().size() + 2, ' ')
        << sub->get_description() << "\n";
  out << "\nRun '" << command_path(app) << " COMMAND --help' for the options of a command";
  if (app.get_parent() == nullptr) out << ", '" << app.get_name() << " --help' for exit codes";
  out << ".\n";
}

bool explain_missing_command(const CLI::App& app, int argc, const char* const* argv,
                             std::ostream& err) {
  const auto& at = deepest_parsed(app);
  const auto subs = visible_subcommands(at);
  if (subs.empty()) return false;  // a command that runs itself: its own error says more
  const auto typed = what_was_typed(at, argc, argv);
  if (!typed.word.empty()) {
    err << "error: unknown command '" << printable(typed.word) << "'";
    std::vector<std::string> names;
    for (const auto* sub : subs) names.push_back(sub->get_name());
    const auto near = nearest_names(typed.word, names);
    for (std::size_t k = 0; k < near.size(); ++k)
      err << (k == 0 ? ": did you mean '" : "' or '") << near[k];
    err << (near.empty() ? "\n\n" : "'?\n\n");
  } else if (!typed.unknown_option.empty()) {
    err << "error: unknown option '" << printable(typed.unknown_option) << "'\n\n";
  }
  print_command_list(at, err);
  return true;
}

}  // namespace tether::cli
