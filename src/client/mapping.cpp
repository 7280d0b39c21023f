#include "tether/client/mapping.hpp"

#include <algorithm>
#include <charconv>
#include <optional>
#include <vector>

#include "tether/client/url.hpp"

namespace tether::client {
namespace {

constexpr std::string_view form = "expected [BIND:]LPORT:DEVICE:DPORT";

struct field {
  std::string_view text;  // without brackets
  bool bracketed = false;
};

// Splits on ':' while keeping "[v6:addr]" together. nullopt on an unclosed or misplaced
// bracket.
std::optional<std::vector<field>> split(std::string_view spec) {
  std::vector<field> out;
  std::size_t i = 0;
  for (;;) {
    field f;
    if (i < spec.size() && spec[i] == '[') {
      const auto close = spec.find(']', i);
      if (close == std::string_view::npos) return std::nullopt;
      f.text = spec.substr(i + 1, close - i - 1);
      f.bracketed = true;
      i = close + 1;
      if (i < spec.size() && spec[i] != ':') return std::nullopt;
    } else {
      const auto colon = std::min(spec.find(':', i), spec.size());
      f.text = spec.substr(i, colon - i);
      if (f.text.find_first_of("[]") != std::string_view::npos) return std::nullopt;
      i = colon;
    }
    out.push_back(f);
    if (i >= spec.size()) return out;
    ++i;                             // the ':'
    if (out.size() > 8) return out;  // far too many already; the caller says so
  }
}

// `what` is "local port" or "device port"; `min` is 0 or 1.
result<std::uint16_t> parse_port(const field& f, std::string_view what, unsigned min) {
  const std::string name(what);
  if (f.bracketed || f.text.empty() ||
      !std::all_of(f.text.begin(), f.text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return error{name + " '" + std::string(f.text) + "' is not a number"};
  }
  unsigned long v = 0;
  auto [p, ec] = std::from_chars(f.text.data(), f.text.data() + f.text.size(), v);
  if (ec != std::errc{} || v < min || v > 65535) {
    return error{name + " " + std::string(f.text) + " out of range (" + std::to_string(min) +
                 "-65535)"};
  }
  return static_cast<std::uint16_t>(v);
}

bool is_device_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// BIND: a host, a bracketed IPv6 literal, or `*` / empty for every IPv4 interface.
result<std::string> parse_bind(const field& bind) {
  if (!bind.bracketed && (bind.text.empty() || bind.text == "*"))
    return std::string("0.0.0.0");  // as with ssh -L: empty or * means every interface
  auto h = parse_host(bind.bracketed ? "[" + std::string(bind.text) + "]" : std::string(bind.text));
  if (!h) return error{"bind address: " + h.message()};
  return std::move(h).value();
}

// DEVICE: a device id or host name, or a bracketed IPv6 literal.
result<std::string> parse_device_field(const field& dev) {
  if (dev.bracketed) {
    auto h = parse_host("[" + std::string(dev.text) + "]");
    if (!h) return error{"device: " + h.message()};
    return std::move(h).value();
  }
  if (dev.text.empty()) return error{"empty device"};
  if (auto problem = device_name_problem(dev.text); !problem.empty()) return error{problem};
  return std::string(dev.text);
}

std::string with_brackets(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

std::string mapping::text() const {
  if (socks) return with_brackets(bind_host) + ":" + std::to_string(local_port) + " socks5";
  return with_brackets(bind_host) + ":" + std::to_string(local_port) + " -> " +
         with_brackets(device) + ":" + std::to_string(device_port) +
         (proto == mux::protocol::udp ? " udp" : " tcp");
}

result<mapping> parse_mapping(std::string_view spec, mux::protocol proto) {
  const std::string prefix =
      std::string(proto == mux::protocol::udp ? "-U" : "-L") + " '" + std::string(spec) + "': ";
  auto fail = [&](std::string what) { return error{prefix + what}; };

  auto fields = split(spec);
  if (!fields) return fail(std::string(form) + " (brackets go around a whole IPv6 address)");
  if (fields->size() > 4) {
    return fail(std::string(form) + " (write IPv6 addresses in brackets, like [::1]:2222)");
  }
  if (fields->size() < 3) return fail(std::string(form));

  mapping m;
  m.proto = proto;
  std::size_t next = 0;
  if (fields->size() == 4) {
    auto h = parse_bind((*fields)[next++]);
    if (!h) return fail(h.message());
    m.bind_host = std::move(h).value();
  }
  auto lport = parse_port((*fields)[next++], "local port", 0);
  if (!lport) return fail(lport.message());
  m.local_port = *lport;

  auto dev = parse_device_field((*fields)[next++]);
  if (!dev) return fail(dev.message());
  m.device = std::move(dev).value();

  auto dport = parse_port((*fields)[next++], "device port", 1);
  if (!dport) return fail(dport.message());
  m.device_port = *dport;
  return m;
}

result<mapping> parse_local_address(std::string_view text) {
  auto fields = split(text);
  if (!fields || fields->empty() || fields->size() > 2)
    return error{"'" + std::string(text) +
                 "': expected [BIND:]PORT, like 2222, 127.0.0.1:2222 or [::1]:2222"};
  mapping m;
  if (fields->size() == 2) {
    auto h = parse_bind((*fields)[0]);
    if (!h) return error{h.message()};
    m.bind_host = std::move(h).value();
  }
  auto port = parse_port(fields->back(), "local port", 0);
  if (!port) return error{port.message()};
  m.local_port = *port;
  return m;
}

std::string device_name_problem(std::string_view device) {
  // The length first: a long name is refused for that, whatever its characters (the spec
  // in front of the message already shows it).
  if (device.size() > max_device_length)
    return "the device is " + std::to_string(device.size()) +
           " characters long; a device id or host name has at most " +
           std::to_string(max_device_length);
  if (!std::all_of(device.begin(), device.end(), is_device_char))
    return "device '" + std::string(device) +
           "' is not a device id or host name (A-Z a-z 0-9 . _ -)";
  return {};
}

result<std::string> parse_device(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    return parse_device_field({text.substr(1, text.size() - 2), true});
  if (text.find(':') != std::string_view::npos && parse_host("[" + std::string(text) + "]"))
    return parse_device_field({text, true});  // a bare IPv6 literal: no port can follow here
  return parse_device_field({text, false});
}

result<mapping> parse_socks_mapping(std::string_view spec) {
  auto m = parse_local_address(spec);
  if (!m) return error{"-D '" + std::string(spec) + "': " + m.message()};
  m->socks = true;
  m->device = "*";
  return m;
}

}  // namespace tether::client
