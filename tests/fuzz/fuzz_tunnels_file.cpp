// Fuzzes the tunnels-file parser (`tether up -f`) on arbitrary TOML text. config_error is
// the only exception it may throw, and it names the file. A file that parses must hold what
// docs/TUNNELS.md promises: at least one server, each with at least one tunnel, device
// ports 1-65535, names unique, UDP only toward tls:// servers; and reloading a file onto
// itself must change nothing.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "tether/client/reload_plan.hpp"
#include "tether/client/tunnels_file.hpp"
#include "tether/toml_check.hpp"

namespace {

using namespace tether;

void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_tunnels_file: %s\n", what);
  std::abort();
}

void check_file(const client::tunnels_file& f) {
  check(!f.servers.empty(), "a file without servers");
  std::set<std::string> names;
  for (const auto& s : f.servers) {
    check(!s.tunnels.empty(), "a server without tunnels");
    check(!s.settings.url.host.empty(), "a server without a host");
    for (const auto& t : s.tunnels) {
      check(t.map.device_port >= 1, "device port 0");
      check(!t.map.device.empty(), "empty device");
      check(!t.label().empty(), "empty label");
      check(t.same_as(t), "a tunnel unlike itself");
      if (!t.name.empty()) check(names.insert(t.name).second, "duplicate tunnel name");
      if (t.map.proto == mux::protocol::udp)
        check(s.settings.url.kind == client::scheme::tls, "udp toward an ssh:// server");
    }
  }
  check(client::plan_reload(f.servers, f.servers).empty(), "reloading a file onto itself changes it");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    check_file(client::parse_tunnels_file(text, "conf/tunnels.toml"));
  } catch (const config_error& e) {
    check(std::string_view(e.what()).starts_with("conf/tunnels.toml"),
          "an error that does not name the file");
  }
  return 0;
}
