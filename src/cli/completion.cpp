#include "completion.hpp"

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "app_walk.hpp"

namespace tether::cli {

namespace {

// What may follow an option that takes a value, read from its CLI11 type name
// ("INT", "TEXT:{a,b}", "TEXT:DIR", "FLOAT:FLOAT in [0 - 1]"): the first part is the type,
// the others are the descriptions of its validators.
struct value_kind {
  enum { none, choices, directory, file } what = file;
  std::string words;  // for choices: "trace debug info"
};

value_kind kind_of_value(const CLI::Option& opt) {
  std::vector<std::string> parts;
  std::stringstream in(opt.get_type_name());
  for (std::string part; std::getline(in, part, ':');) parts.push_back(part);
  value_kind kind;
  if (parts.empty()) return kind;
  const auto& type = parts.front();
  if (type == "INT" || type == "UINT" || type == "FLOAT" || type == "NUMBER" || type == "BOOLEAN")
    kind.what = value_kind::none;  // a number: nothing worth offering
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const auto& v = parts[i];
    if (v.size() >= 2 && v.front() == '{' && v.back() == '}') {  // CLI::IsMember
      kind.what = value_kind::choices;
      kind.words = v.substr(1, v.size() - 2);
      for (auto& c : kind.words)
        if (c == ',') c = ' ';
    } else if (v == "DIR") {  // CLI::ExistingDirectory
      kind.what = value_kind::directory;
    }
  }
  // Anything else — a file, an address, a token — gets bash's own file name completion,
  // which is what a user would get with no completion at all.
  return kind;
}

// Single-quoted for bash: a command or option name cannot break out of the script.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

// The path of `app` below the root, as the script keeps it: "", "connect", "map add".
std::string path_below_root(const CLI::App& app) {
  if (app.get_parent() == nullptr) return "";
  const auto above = path_below_root(*app.get_parent());
  return above.empty() ? app.get_name() : above + " " + app.get_name();
}

// Every command of the tree, the root first, parents before their children.
void collect(const CLI::App& app, std::vector<const CLI::App*>& out) {
  out.push_back(&app);
  for (const auto* sub : visible_subcommands(app)) collect(*sub, out);
}

}  // namespace

void write_bash_completion(const CLI::App& root, std::ostream& out) {
  std::vector<const CLI::App*> apps;
  collect(root, apps);
  const auto name = root.get_name();
  const auto function = "_" + name;

  out << "# bash completion for " << name << "\n"
      << "# Written by `" << name
      << " completion bash` from the program's own command "
         "definitions; do not edit.\n\n"
      << function << "() {\n"
      << "  local cur=${COMP_WORDS[COMP_CWORD]}\n"
      << "  # Walk the words before the cursor: a command leads down the tree, an option that\n"
      << "  # takes a value makes the next word its value (`--opt=value` arrives as three\n"
      << "  # words, `=` in the middle).\n"
      << "  local path= value_of= i word\n"
      << "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      << "    word=${COMP_WORDS[i]}\n"
      << "    if [[ -n $value_of ]]; then\n"
      << "      [[ $word == = ]] || value_of=\n"
      << "      continue\n"
      << "    fi\n"
      << "    case \"$path/$word\" in\n";
  for (const auto* app : apps) {
    const auto here = path_below_root(*app);
    for (const auto* sub : visible_subcommands(*app)) {
      const auto there = path_below_root(*sub);
      out << "      " << quoted(here + "/" + sub->get_name()) << ") path=" << quoted(there)
          << " ;;\n";
    }
    for (const auto* opt : visible_named_options(*app)) {
      if (!takes_value(*opt)) continue;
      std::vector<std::string> keys;
      for (const auto& s : spellings(*opt)) keys.push_back(quoted(here + "/" + s));
      std::string alternatives;
      for (const auto& k : keys) alternatives += (alternatives.empty() ? "" : "|") + k;
      out << "      " << alternatives << ") value_of=$word ;;\n";
    }
  }
  out << "    esac\n"
      << "  done\n\n"
      << "  if [[ -n $value_of ]]; then\n"
      << "    [[ $cur == = ]] && cur=\n"
      << "    case \"$path/$value_of\" in\n";
  for (const auto* app : apps) {
    const auto here = path_below_root(*app);
    for (const auto* opt : visible_named_options(*app)) {
      if (!takes_value(*opt)) continue;
      const auto kind = kind_of_value(*opt);
      if (kind.what == value_kind::file) continue;  // the default below
      std::string alternatives;
      for (const auto& s : spellings(*opt))
        alternatives += (alternatives.empty() ? "" : "|") + quoted(here + "/" + s);
      out << "      " << alternatives << ") ";
      switch (kind.what) {
        case value_kind::choices:
          out << "COMPREPLY=($(compgen -W " << quoted(kind.words) << " -- \"$cur\")) ;;\n";
          break;
        case value_kind::directory:
          out << "compopt -o dirnames 2>/dev/null; COMPREPLY=() ;;\n";
          break;
        default:
          out << "COMPREPLY=() ;;  # a number\n";
          break;
      }
    }
  }
  out << "      *) compopt -o default 2>/dev/null; COMPREPLY=() ;;  # a file name, or bash's "
         "default\n"
      << "    esac\n"
      << "    return 0\n"
      << "  fi\n\n"
      << "  local words=\n"
      << "  if [[ $cur == -* ]]; then\n"
      << "    case $path in\n";
  for (const auto* app : apps) {
    std::vector<std::string> names;
    for (const auto* opt : visible_named_options(*app))
      for (const auto& s : spellings(*opt)) names.push_back(s);
    if (!names.empty())
      out << "      " << quoted(path_below_root(*app)) << ") words=" << quoted(joined(names))
          << " ;;\n";
  }
  out << "    esac\n"
      << "  else\n"
      << "    case $path in\n";
  for (const auto* app : apps) {
    std::vector<std::string> names;
    for (const auto* sub : visible_subcommands(*app)) names.push_back(sub->get_name());
    if (!names.empty())
      out << "      " << quoted(path_below_root(*app)) << ") words=" << quoted(joined(names))
          << " ;;\n";
  }
  out << "    esac\n"
      << "  fi\n"
      << "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      << "}\n"
      << "complete -F " << function << " " << name << "\n";
}

void add_completion_command(CLI::App& app, action& run) {
  auto* cmd = app.add_subcommand("completion", "Print a shell completion script");
  cmd->group("");  // for packagers, not a daily command: hidden from --help and the usage
  cmd->add_option("shell", "The shell (bash)")->required()->check(CLI::IsMember({"bash"}));
  cmd->callback([&app, &run] {
    run = [&app] {
      write_bash_completion(app, std::cout);
      return std::cout.flush() ? exit_ok : exit_failure;
    };
  });
}

}  // namespace tether::cli
