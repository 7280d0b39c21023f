// Fuzzes the -L / -U spec parser. A spec that parses must come back the same when written
// out again in the canonical form ([BIND]:LPORT:DEVICE:DPORT with IPv6 in brackets), and
// one that does not must say so naming the option and the spec.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tether/client/mapping.hpp"

namespace {

using namespace tether;

[[noreturn]] void fail(const char* what, std::string_view spec) {
  std::fprintf(stderr, "fuzz_mapping: %s (spec of %zu bytes)\n", what, spec.size());
  std::abort();
}

std::string bracketed(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

void check_one(std::string_view spec, mux::protocol proto) {
  const auto m = client::parse_mapping(spec, proto);
  if (!m) {
    const std::string prefix = std::string(proto == mux::protocol::udp ? "-U '" : "-L '");
    if (m.message().rfind(prefix, 0) != 0) fail("an error that does not name the option", spec);
    if (m.message().find(spec) == std::string::npos)
      fail("an error that does not quote the spec", spec);
    return;
  }
  if (m->proto != proto) fail("the protocol changed", spec);
  if (m->device.empty()) fail("an empty device", spec);
  if (m->device_port == 0) fail("device port 0", spec);
  if (m->bind_host.empty()) fail("an empty bind address", spec);
  if (m->bind_host.find_first_of("[]") != std::string::npos ||
      m->device.find_first_of("[]") != std::string::npos)
    fail("brackets kept in a host", spec);
  (void)m->text();

  const std::string canonical = bracketed(m->bind_host) + ":" + std::to_string(m->local_port) +
                                ":" + bracketed(m->device) + ":" + std::to_string(m->device_port);
  const auto again = client::parse_mapping(canonical, proto);
  if (!again) fail("the canonical form of a valid spec does not parse", spec);
  if (again->bind_host != m->bind_host || again->local_port != m->local_port ||
      again->device != m->device || again->device_port != m->device_port)
    fail("the canonical form parses to another mapping", spec);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view spec(reinterpret_cast<const char*>(data), size);
  check_one(spec, mux::protocol::tcp);
  check_one(spec, mux::protocol::udp);
  return 0;
}
