#include "tether/client/url.hpp"

#include "tether/transport/host.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace tether::client {
namespace {

constexpr std::string_view forms = "tls://HOST[:PORT] or ssh://[USER@]HOST[:PORT]";

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_user_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '+' || c == '$';
}

}  // namespace


result<std::string> parse_host(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  if (text.empty()) return error{"empty host"};
  if (text.front() == '[') {
    if (text.back() != ']') return error{"host " + quoted + ": missing ']'"};
    const std::string_view inner = text.substr(1, text.size() - 2);
    if (inner.find(':') == std::string_view::npos || !transport::is_valid_host(inner)) {
      return error{"host " + quoted + ": brackets must hold an IPv6 address"};
    }
    return std::string(inner);
  }
  if (text.find(':') != std::string_view::npos) {
    return error{"host " + quoted + ": write IPv6 addresses in brackets, like [::1]"};
  }
  if (!transport::is_valid_host(text)) return error{"host " + quoted + " is not a host name or IP address"};
  return std::string(text);
}

std::string server_url::text() const {
  std::string out = kind == scheme::tls ? "tls://" : "ssh://";
  if (!user.empty()) out += user + "@";
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return out + ":" + std::to_string(port);
}

result<server_url> parse_server_url(std::string_view text) {
  const std::string prefix = "server URL '" + std::string(text) + "': ";
  auto fail = [&](std::string what) { return error{prefix + what}; };

  const auto sep = text.find("://");
  if (sep == std::string_view::npos) return fail("expected " + std::string(forms));
  const std::string sch = lower(text.substr(0, sep));
  server_url url;
  if (sch == "tls") {
    url.kind = scheme::tls;
    url.port = default_tls_port;
  } else if (sch == "ssh") {
    url.kind = scheme::ssh;
    url.port = default_ssh_port;
  } else {
    return fail("unknown scheme '" + std::string(text.substr(0, sep)) + "' (use " +
                std::string(forms) + ")");
  }

  std::string_view rest = text.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);  // "tls://host/" is harmless
  if (auto extra = rest.find_first_of("/?#"); extra != std::string_view::npos) {
    return fail("unexpected '" + std::string(rest.substr(extra)) + "' after the host");
  }

  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view user = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (url.kind != scheme::ssh) return fail("a user name only goes with ssh://");
    if (user.find(':') != std::string_view::npos) {
      return fail("passwords in URLs are not supported (use a key or an ssh-agent)");
    }
    if (user.empty()) return fail("empty user name before '@'");
    if (!std::all_of(user.begin(), user.end(), is_user_char)) {
      return fail("user name '" + std::string(user) +
                  "' has characters other than A-Z a-z 0-9 . _ - + $");
    }
    url.user = std::string(user);
  }

  std::string_view host = rest;
  std::string_view port;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after the IPv6 address");
    host = rest.substr(0, close + 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return fail("expected ':PORT' after ']'");
      port = rest.substr(close + 2);
      has_port = true;
    }
  } else if (auto colon = rest.find(':'); colon != std::string_view::npos) {
    if (rest.find(':', colon + 1) != std::string_view::npos) {
      return fail("write IPv6 addresses in brackets, like [::1]:7443");
    }
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    has_port = true;
  }
  if (host.empty()) return fail("missing host");
  auto h = parse_host(host);
  if (!h) return fail(h.message());
  url.host = std::move(h).value();

  if (has_port) {
    if (!is_digits(port)) return fail("port '" + std::string(port) + "' is not a number");
    unsigned long p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc{} || p < 1 || p > 65535) {
      return fail("port " + std::string(port) + " out of range (1-65535)");
    }
    url.port = static_cast<std::uint16_t>(p);
  }
  return url;
}

}  // namespace tether::client
