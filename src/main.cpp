#include "tether/cli/cli.hpp"

int main(int argc, char** argv) { return tether::cli::run(argc, argv); }
