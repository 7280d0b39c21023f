#pragma once

namespace tether::cli {

/// Parses the command line, runs the chosen subcommand and returns the process exit code.
int run(int argc, char** argv);

}  // namespace tether::cli
