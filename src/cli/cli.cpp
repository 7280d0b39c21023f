#include "tether/cli/cli.hpp"

#include <CLI/CLI.hpp>
#include <iostream>

#include "tether/version.hpp"

namespace tether::cli {

int run(int argc, char** argv) {
  CLI::App app{"tether: secure tunnels to ports on remote devices"};
  app.set_version_flag("--version", std::string("tether ") + tether::version);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}

}  // namespace tether::cli
