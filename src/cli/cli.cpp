#include "tether/cli/cli.hpp"

#include <malloc.h>

#include <csignal>
#include <iostream>

#include "commands.hpp"
#include "map_command.hpp"
#include "tether/version.hpp"

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

}  // namespace

int run(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that vanishes is an error value, not a signal
  keep_big_buffers_out_of_the_heap();
  CLI::App app{"tether: secure tunnels to ports on remote devices"};
  app.set_version_flag("--version", std::string("tether ") + tether::version);
  app.require_subcommand(1);
  action chosen;
  add_server_command(app, chosen);
  add_connect_command(app, chosen);
  add_up_command(app, chosen);
  add_token_command(app, chosen);
  add_map_command(app, chosen);
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
