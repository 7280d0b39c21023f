#include "tether/cli/cli.hpp"

#include <csignal>
#include <iostream>

#include "commands.hpp"
#include "tether/version.hpp"

namespace tether::cli {

int run(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that vanishes is an error value, not a signal
  CLI::App app{"tether: secure tunnels to ports on remote devices"};
  app.set_version_flag("--version", std::string("tether ") + tether::version);
  app.require_subcommand(1);
  action chosen;
  add_server_command(app, chosen);
  add_connect_command(app, chosen);
  add_token_command(app, chosen);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
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
