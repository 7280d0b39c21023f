#include "man_page.hpp"

#include <cctype>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "app_walk.hpp"
#include "tether/version.hpp"

namespace tether::cli {

namespace {

// Text made safe for roff: a backslash is an escape, a dot or quote that starts a line is a
// request, and a plain `-` may print as a hyphen that cannot be pasted back into a shell.
std::string roff(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\e";
    } else if (c == '-') {
      out += "\\-";
    } else {
      out += c;
    }
  }
  if (!out.empty() && (out.front() == '.' || out.front() == '\'')) out.insert(0, "\\&");
  return out;
}

// A CLI11 type name ("INT:INT in [0 - 1024]", "TEXT:FILE") split into what to write after the
// option ("INT", "FILE") and what the value must be ("INT in [0 - 1024]"), if anything.
struct value_text {
  std::string placeholder;
  std::string constraint;
};

value_text describe_value(const CLI::Option& opt) {
  std::vector<std::string> parts;
  std::stringstream in(opt.get_type_name());
  for (std::string part; std::getline(in, part, ':');) parts.push_back(part);
  value_text v{parts.empty() ? "VALUE" : parts.front(), ""};
  for (std::size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "FILE" || parts[i] == "DIR" || parts[i].rfind("PATH", 0) == 0) {
      v.placeholder = parts[i].substr(0, parts[i].find('('));
    } else {
      v.constraint += (v.constraint.empty() ? "" : "; ") + parts[i];
    }
  }
  if (opt.get_items_expected_max() > 1) v.placeholder += " ...";
  return v;
}

// "tether map add [OPTIONS] mapping", or "tether map COMMAND" for a command of commands.
std::string synopsis(const CLI::App& app) {
  std::string s = "\\fB" + roff(command_path(app)) + "\\fR";
  if (!visible_subcommands(app).empty()) return s + " \\fICOMMAND\\fR";
  if (!visible_named_options(app).empty()) s += " [\\fIOPTIONS\\fR]";
  for (const auto* p : positionals(app)) {
    auto name = "\\fI" + roff(p->get_name()) + "\\fR";
    if (p->get_items_expected_max() > 1) name += "...";
    s += " " + (p->get_required() ? name : "[" + name + "]");
  }
  return s;
}

void write_option(const CLI::Option& opt, std::ostream& out) {
  std::string names;
  for (const auto& s : spellings(opt)) names += (names.empty() ? "" : ", ") + roff(s);
  out << ".TP\n\\fB" << names << "\\fR";
  const auto value = describe_value(opt);
  if (takes_value(opt)) out << " \\fI" << roff(value.placeholder) << "\\fR";
  out << "\n" << roff(opt.get_description());
  if (takes_value(opt) && !value.constraint.empty()) out << " (" << roff(value.constraint) << ")";
  if (!opt.get_default_str().empty()) out << " (default: " << roff(opt.get_default_str()) << ")";
  if (!opt.get_envname().empty()) out << " (environment: " << roff(opt.get_envname()) << ")";
  out << "\n";
}

void write_command(const CLI::App& app, std::ostream& out) {
  out << ".SS \"" << command_path(app) << "\"\n"
      << synopsis(app) << "\n.PP\n"
      << roff(app.get_description()) << "\n";
  for (const auto* p : positionals(app)) {
    out << ".TP\n\\fI" << roff(p->get_name()) << "\\fR\n" << roff(p->get_description()) << "\n";
  }
  for (const auto* opt : visible_named_options(app)) write_option(*opt, out);
  for (const auto* sub : visible_subcommands(app)) write_command(*sub, out);
}

}  // namespace

void write_man_page(const CLI::App& root, std::ostream& out) {
  const auto& name = root.get_name();
  // "tether: secure tunnels …" is the program's description; NAME wants "tether \- secure …".
  auto summary = root.get_description();
  if (summary.rfind(name + ": ", 0) == 0) summary.erase(0, name.size() + 2);

  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  out << ".\\\" Written by `" << name << " man` from the program's own command definitions.\n"
      << ".TH " << upper << " 1 \"\" \"" << name << " " << tether::version
      << "\" \"User Commands\"\n"
      << ".SH NAME\n"
      << name << " \\- " << roff(summary) << "\n"
      << ".SH SYNOPSIS\n";
  for (const auto* sub : visible_subcommands(root)) out << synopsis(*sub) << "\n.br\n";
  out << "\\fB" << name << "\\fR \\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR\n"
      << ".SH DESCRIPTION\n"
      << "\\fB" << name << "\\fR is one program with the commands below; \\fB" << name
      << " \\fICOMMAND\\fB \\-\\-help\\fR prints the options of one.\n"
      << ".SH COMMANDS\n";
  for (const auto* sub : visible_subcommands(root)) write_command(*sub, out);
  out << ".SH OPTIONS\n";
  for (const auto* opt : visible_named_options(root)) write_option(*opt, out);
  out << ".SH \"EXIT STATUS\"\n";
  for (const auto& e : exit_code_meanings)
    out << ".TP\n.B " << e.code << "\n" << roff(e.meaning) << "\n";
  out << ".SH \"SEE ALSO\"\n"
      << ".BR ssh (1),\n"
      << ".BR ssh_config (5)\n";
}

void add_man_command(CLI::App& app, action& run) {
  auto* cmd = app.add_subcommand("man", "Print the manual page (roff)");
  cmd->group("");  // for packagers: hidden from --help and the usage
  cmd->callback([&app, &run] {
    run = [&app] {
      write_man_page(app, std::cout);
      return std::cout.flush() ? exit_ok : exit_failure;
    };
  });
}

}  // namespace tether::cli
