#include <iostream>

#include "commands.hpp"
#include "tether/server/token.hpp"

namespace tether::cli {

void add_apikey_command(CLI::App& app, action& run) {
  auto* apikey = app.add_subcommand("apikey", "Manage keys of the server's HTTP API");
  apikey->require_subcommand(1);
  auto* make = apikey->add_subcommand(
      "new", "Print a fresh random API key and the config section that holds its hash");
  auto name = std::make_shared<std::string>();
  make->add_option("NAME", *name, "A name for the key, seen in logs and the message log")
      ->required()
      ->check([](const std::string& n) -> std::string {
        const bool ok = !n.empty() && n.size() <= 64 &&
                        n.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                            "0123456789._-@") == std::string::npos;
        return ok ? "" : "a name is 1-64 of A-Z a-z 0-9 . _ - @";
      });
  make->callback([&run, name] {
    run = [name] {
      const auto key = server::generate_token();
      std::cout << key << "\n\n"
                << "[[api_key]]\n"
                << "name = \"" << *name << "\"\n"
                << "token_sha256 = \"" << server::to_hex(server::sha256(key)) << "\"\n"
                << "allow = [\"*\"]  # narrow it: \"dev-*:9876\", \"dev-42:5683/udp\"\n";
      std::cerr << "# Give the key (line 1) to the program that calls the API, e.g. in\n"
                << "# TETHER_API_KEY or a file for --api-key-file; put the [[api_key]] section\n"
                << "# in the server's config. The key is not shown again.\n";
      return exit_ok;
    };
  });
}

}  // namespace tether::cli
