#include "tether/cli/cli.hpp"

#include <malloc.h>

#include <csignal>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "completion.hpp"
#include "man_page.hpp"
#include "map_command.hpp"
#include "output.hpp"
#include "tether/version.hpp"
#include "usage.hpp"

namespace tether::cli {

namespace {

// Big buffers (256 KiB reads, relay leases) are mapped from the system, not carved from the
// heap: their untouched pages cost nothing and a freed one goes back at once. glibc would
// otherwise raise this threshold after the first such buffer is freed, and the heap would
// keep for good what a burst of connections once used. Fixing it would also fix the heap's
// trim threshold at 128 KiB, so that the heap could shrink and regrow around short-lived
// buffers in a busy loop: the server trims on purpose instead, when connections leave.
void keep_big_buffers_out_of_the_heap() {
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
#endif
}

// The end of `--help`, what a script can branch on. Set before the subcommands are added,
// so that each of them (`tether connect --help`) ends with it too.
std::string exit_codes_footer() {
  std::ostringstream out;
  out << "Exit codes:";
  for (const auto& e : exit_code_meanings)
    out << "\n  " << std::left << std::setw(5) << e.code << e.meaning;
  return out.str();
}

// --log-level is checked as the command line is read, for every command that has it: a
// level spdlog does not know is a mistake of the command line (exit 2), found before the
// command does anything.
void check_log_levels(CLI::App& app) {
  for (auto* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (auto* opt = sub->get_option_no_throw("--log-level"))
      opt->check(CLI::Validator(log_level_problem, ""));
}

}  // namespace

int run(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that vanishes is an error value, not a signal
  keep_big_buffers_out_of_the_heap();
  // Named, not taken from argv[0]: the usage, completion and man page say "tether" however
  // the binary was started.
  CLI::App app{"tether: secure tunnels to ports on remote devices", "tether"};
  app.set_version_flag("--version", std::string("tether ") + tether::version);
  app.require_subcommand(1);
  app.footer(exit_codes_footer());
  // A mistake on the command line reads like every other error ("error: --device is
  // required"), so that scripts and people can tell it from output.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "error: " + std::string(e.what()) + "\nRun with --help for more information.\n";
  });
  // `connect ... -- CMD ARGS...`: the words after the first "--" are a command to run, not
  // arguments of tether's, whatever they look like (CLI11 would read "-c" as an option).
  int own_argc = argc;
  std::vector<std::string> command;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") {
      own_argc = i;
      command.assign(argv + i + 1, argv + argc);
      break;
    }
  action chosen;
  add_server_command(app, chosen);
  add_connect_command(app, chosen, command);
  add_up_command(app, chosen);
  add_devices_command(app, chosen);
  add_agent_command(app, chosen);
  add_token_command(app, chosen);
  add_apikey_command(app, chosen);
  add_send_command(app, chosen);
  add_webhook_command(app, chosen);
  add_messages_command(app, chosen);
  add_map_command(app, chosen);
  add_completion_command(app, chosen);
  add_man_command(app, chosen);
  check_log_levels(app);
  try {
    app.parse(own_argc, argv);
    if (own_argc < argc && app.get_subcommands().front()->get_name() != "connect")
      throw CLI::ExtrasError("'--' and a command after it are only for `tether connect`",
                             CLI::ExitCodes::ExtrasError);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != static_cast<int>(CLI::ExitCodes::Success) &&
        explain_missing_command(app, own_argc, argv, std::cerr))
      return exit_usage;
    const int code = app.exit(e);
    return code == 0 ? exit_ok : exit_usage;
  }
  try {
    return chosen ? chosen() : exit_usage;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return exit_failure;
  }
}

}  // namespace tether::cli
