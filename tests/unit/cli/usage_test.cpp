#include "../../../src/cli/usage.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace tether::cli {
namespace {

using names = std::vector<std::string>;
const names commands{"server", "connect", "up", "token", "map"};

TEST(EditDistance, CountsInsertionsDeletionsReplacementsAndSwaps) {
  EXPECT_EQ(edit_distance("connect", "connect"), 0u);
  EXPECT_EQ(edit_distance("conect", "connect"), 1u);    // insert
  EXPECT_EQ(edit_distance("connnect", "connect"), 1u);  // delete
  EXPECT_EQ(edit_distance("cannect", "connect"), 1u);   // replace
  EXPECT_EQ(edit_distance("mpa", "map"), 1u);           // swap neighbours
  EXPECT_EQ(edit_distance("CONNECT", "connect"), 0u);   // case is not a typo
  EXPECT_EQ(edit_distance("", "map"), 3u);
  EXPECT_EQ(edit_distance("map", ""), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

TEST(NearestNames, SuggestsOnlyWhatIsClose) {
  EXPECT_EQ(nearest_names("conect", commands), names{"connect"});
  EXPECT_EQ(nearest_names("sevrer", commands), names{"server"});
  EXPECT_EQ(nearest_names("upp", commands), names{"up"});
  EXPECT_EQ(nearest_names("frobnicate", commands), names{});
  EXPECT_EQ(nearest_names("x", commands), names{});
  EXPECT_EQ(nearest_names("", commands), names{});
  // One edit per three letters of the longer word, and never more than two.
  EXPECT_EQ(nearest_names("tkn", commands), names{});
  EXPECT_EQ(nearest_names("conet", commands), names{"connect"});
  EXPECT_EQ(nearest_names("conecct", commands), names{"connect"});
  EXPECT_EQ(nearest_names("cnnectt", commands), names{"connect"});
}

TEST(NearestNames, NamesEveryOneOfATie) {
  EXPECT_EQ(nearest_names("mp", names{"map", "mop", "server"}), (names{"map", "mop"}));
}

TEST(CommandList, ListsEveryVisibleCommandWithItsLine) {
  CLI::App app{"test", "tether"};
  app.add_subcommand("server", "Run the tunnel server");
  app.add_subcommand("connect", "Map local ports");
  app.add_subcommand("secret", "Hidden")->group("");
  std::ostringstream out;
  print_command_list(app, out);
  EXPECT_EQ(out.str(),
            "Usage: tether COMMAND [OPTIONS]\n\nCommands:\n"
            "  server   Run the tunnel server\n"
            "  connect  Map local ports\n"
            "\nRun 'tether COMMAND --help' for the options of a command, 'tether --help' for "
            "exit codes.\n");
}

}  // namespace
}  // namespace tether::cli
