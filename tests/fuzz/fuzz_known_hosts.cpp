// Fuzzes the known_hosts parser and matcher. The input is known_hosts text; every entry it
// yields is checked against the host names and keys the file itself mentions, and a line
// written by known_hosts_line() for a parsed key must parse back to that key.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tether/transport/ssh_known_hosts.hpp"
#include "tether/transport/ssh_util.hpp"

namespace {

using namespace tether::transport;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_known_hosts: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto kh = known_hosts::parse(text);

  std::size_t last_line = 0;
  for (const auto& e : kh.entries()) {
    check(e.line > last_line, "entries out of line order");
    last_line = e.line;
    check(!e.hosts.empty() && !e.key_type.empty(), "an entry without hosts or key type");
    check(ssh_key_type_of_blob(e.key_blob) == e.key_type, "an entry whose blob has another type");
  }

  // Names to look up: the first pattern of each entry as written, and a few fixed ones.
  const std::string fixed[] = {"example.com", "[127.0.0.1]:2222", "10.0.0.1", "",
                               known_host_name("Host.Example", 22)};
  const auto& entries = kh.entries();
  for (std::size_t i = 0; i < entries.size() && i < 8; ++i) {
    const auto& e = entries[i];
    const auto first = std::string_view(e.hosts).substr(0, e.hosts.find(','));
    for (const std::string_view name : {first, std::string_view(fixed[i % std::size(fixed)])}) {
      (void)kh.key_types_for(name);
      const auto v = kh.check(name, e.key_blob);
      if (v.what != known_hosts::status::not_found)
        check(v.entry != nullptr, "a verdict without the line it rests on");
      if (v.what == known_hosts::status::match)
        check(v.entry->key_blob == e.key_blob, "match on another key");
      (void)kh.check(name, "");
    }
    // A line we would append for this key must read back as this key.
    const auto line = known_hosts_line("[host.example]:2222", e.key_blob);
    const auto back = known_hosts::parse(line);
    if (!e.key_type.empty() && e.key_type.find_first_of(" \t\r\n") == std::string::npos) {
      check(back.entries().size() == 1, "a line written for a parsed key does not parse");
      check(back.entries()[0].key_blob == e.key_blob, "a written line holds another key");
      check(back.check("[host.example]:2222", e.key_blob).what == known_hosts::status::match,
            "a written line does not match its own host and key");
    }
  }

  // Patterns straight from the input against a name from the input.
  const auto nl = text.find('\n');
  if (nl != std::string_view::npos)
    (void)known_host_field_matches(text.substr(0, nl), text.substr(nl + 1));

  // base64 round trip of whatever the input is.
  const auto b64 = base64_encode(text);
  const auto decoded = base64_decode(b64);
  check(decoded && *decoded == text, "base64 does not round-trip");
  return 0;
}
