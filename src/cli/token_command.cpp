#include <iostream>

#include "commands.hpp"
#include "tether/server/token.hpp"

namespace tether::cli {

void add_token_command(CLI::App& app, action& run) {
  auto* token = app.add_subcommand("token", "Manage access tokens");
  token->require_subcommand(1);
  auto* make = token->add_subcommand(
      "new", "Print a fresh random token and the config line that holds its hash");
  make->callback([&run] {
    run = [] {
      const auto t = server::generate_token();
      std::cout << t << "\n"
                << "token_sha256 = \"" << server::to_hex(server::sha256(t)) << "\"" << std::endl;
      std::cerr << "# Give the token (line 1) to the client, e.g. in a file for --token-file;\n"
                << "# put the token_sha256 line in a [[credential]] of the server's config.\n";
      return exit_ok;
    };
  });
}

}  // namespace tether::cli
