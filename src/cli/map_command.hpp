#pragma once
// `tether map ls|add|rm`: the mappings of a running client, through its control socket.

#include "commands.hpp"

namespace tether::cli {

void add_map_command(CLI::App& app, action& run);

}  // namespace tether::cli
