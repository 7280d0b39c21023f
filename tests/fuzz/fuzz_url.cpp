// Fuzzes the client's server-URL parser and the host check it shares with -L specs. A URL
// that parses must come back the same from its canonical text(); a host that parses must
// come back the same when parsed again (with brackets if it is IPv6).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tether/client/url.hpp"

namespace {

using namespace tether;

[[noreturn]] void fail(const char* what, std::string_view text) {
  std::fprintf(stderr, "fuzz_url: %s (input of %zu bytes)\n", what, text.size());
  std::abort();
}

void check_url(std::string_view text) {
  const auto url = client::parse_server_url(text);
  if (!url) {
    if (url.message().rfind("server URL '", 0) != 0)
      fail("an error that does not name the URL", text);
    return;
  }
  if (url->host.empty()) fail("an empty host", text);
  if (url->port == 0) fail("port 0", text);
  if (url->kind == client::scheme::tls && !url->user.empty()) fail("a user on tls://", text);
  const auto canonical = url->text();
  const auto again = client::parse_server_url(canonical);
  if (!again) fail("the canonical text of a valid URL does not parse", text);
  if (again->kind != url->kind || again->user != url->user || again->host != url->host ||
      again->port != url->port)
    fail("the canonical text parses to another URL", text);
  if (again->text() != canonical) fail("text() is not stable", text);
}

void check_host(std::string_view text) {
  const auto host = client::parse_host(text);
  if (!host) return;
  if (host->empty()) fail("an empty host", text);
  if (host->find_first_of("[]") != std::string::npos) fail("brackets kept in a host", text);
  const bool v6 = host->find(':') != std::string::npos;
  const auto again = client::parse_host(v6 ? "[" + *host + "]" : *host);
  if (!again || *again != *host) fail("a valid host does not parse again to itself", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_url(text);
  check_host(text);
  return 0;
}
