#include "tether/client/stdio_target.hpp"

#include <algorithm>
#include <charconv>
#include <string>

#include "tether/client/mapping.hpp"
#include "tether/client/url.hpp"
#include "tether/transport/host.hpp"

namespace tether::client {
namespace {

constexpr std::string_view form = "expected DEVICE:PORT (or [IPv6]:PORT)";

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

result<mux::target> parse_stdio_target(std::string_view text) {
  const std::string prefix = "--stdio '" + std::string(text) + "': ";
  auto fail = [&](std::string what) { return error{prefix + what}; };

  // The port follows the last ':', or the ']' of a bracketed address.
  std::size_t colon = text.rfind(':');
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after the IPv6 address");
    colon = close + 1;
    if (colon >= text.size() || text[colon] != ':') return fail(std::string(form));
  }
  if (colon == std::string_view::npos) return fail(std::string(form));
  const std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);

  mux::target t;
  t.proto = mux::protocol::tcp;
  if (host.empty()) return fail("empty device");
  if (host.front() == '[') {
    auto h = parse_host(host);
    if (!h) return fail(h.message());
    t.device = std::move(h).value();
  } else if (host.find(':') != std::string_view::npos) {
    // More than one ':' and no brackets: only an IPv6 address and a port make sense.
    if (host.find_first_of("[]") != std::string_view::npos || !transport::is_valid_host(host))
      return fail(std::string(form) + " (write IPv6 addresses in brackets, like [::1]:22)");
    t.device = std::string(host);
  } else {
    if (auto problem = device_name_problem(host); !problem.empty()) return fail(problem);
    t.device = std::string(host);
  }

  if (!is_digits(port)) {
    if (port.empty()) return fail(std::string(form) + ": the port is missing");
    return fail("port '" + std::string(port) + "' is not a number");
  }
  unsigned long p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc{} || p < 1 || p > 65535)
    return fail("port " + std::string(port) + " out of range (1-65535)");
  t.port = static_cast<std::uint16_t>(p);
  return t;
}

}  // namespace tether::client
