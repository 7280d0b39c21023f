#include "tether/api/text.hpp"

#include <cstdint>

namespace tether::api {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The leading "12" or "1.5" of `text` (digits and at most one dot).
std::string_view split_number(std::string_view text) {
  std::size_t n = 0;
  bool dot = false;
  for (; n < text.size(); ++n) {
    if (text[n] == '.' && !dot)
      dot = true;
    else if (text[n] < '0' || text[n] > '9')
      break;
  }
  return text.substr(0, n);
}

// Milliseconds in one `unit`; a bare number is seconds. 0 for an unknown unit.
std::uint64_t unit_in_ms(std::string_view unit) {
  if (unit == "ms") return 1;
  if (unit.empty() || unit == "s") return 1000;
  if (unit == "m") return 60 * 1000;
  if (unit == "h") return 3600 * 1000;
  return 0;
}

// At most 12 digits, so no overflow.
std::uint64_t digits_value(std::string_view digits) {
  std::uint64_t v = 0;
  for (const char c : digits) v = v * 10 + static_cast<std::uint64_t>(c - '0');
  return v;
}

}  // namespace

std::string duration_text(std::chrono::milliseconds d) {
  const auto ms = d.count();
  if (ms % 3'600'000 == 0 && ms != 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0 && ms != 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

result<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+' && plus_is_space) {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= text.size()) return error{"bad %-escape"};
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0) return error{"bad %-escape"};
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

result<form_fields> parse_form(std::string_view text, std::size_t max_fields) {
  form_fields fields;
  while (!text.empty()) {
    const auto amp = text.find('&');
    const auto part = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view{} : text.substr(amp + 1);
    if (part.empty()) continue;
    if (fields.size() == max_fields) return error{"more than " + std::to_string(max_fields) + " fields"};
    const auto eq = part.find('=');
    auto name = percent_decode(part.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? "" : part.substr(eq + 1), true);
    if (!name || !value) return error{"bad %-escape"};
    fields.emplace_back(std::move(*name), std::move(*value));
  }
  return fields;
}

const std::string* form_value(const form_fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields)
    if (n == name) return &v;
  return nullptr;
}

std::string percent_encode(std::string_view text) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

result<std::chrono::milliseconds> parse_duration(std::string_view text,
                                                 std::chrono::milliseconds max) {
  const auto quoted = "'" + std::string(text) + "'";
  const auto number = split_number(text);
  const auto unit_ms = unit_in_ms(text.substr(number.size()));
  const auto dot = number.find('.');
  const auto whole = number.substr(0, dot);
  const auto fraction = dot == std::string_view::npos ? std::string_view{} : number.substr(dot + 1);
  if (unit_ms == 0 || whole.size() + fraction.size() == 0)
    return error{quoted + " is not a duration (like 5s, 0.5s, 500ms, 2m, 1h)"};
  // 13 digits of a whole number are past a day whatever the unit, and whole * unit_ms
  // stays far from overflowing below that.
  const auto too_long = error{quoted + " is too long (at most " + duration_text(max) + ")"};
  if (whole.size() > 12) return too_long;
  std::uint64_t ms = digits_value(whole) * unit_ms;
  // The fraction, to nine digits, in units of 1e-9 of the unit; any further digit that is
  // not 0 is finer than a millisecond in any unit.
  const auto kept = fraction.substr(0, 9);
  std::uint64_t scale = 1;
  for (std::size_t i = 0; i < kept.size(); ++i) scale *= 10;
  const std::uint64_t part = digits_value(kept) * unit_ms;
  const bool finer = part % scale != 0 ||
                     fraction.substr(kept.size()).find_first_not_of('0') != std::string_view::npos;
  if (finer) return error{quoted + " is finer than a millisecond"};
  ms += part / scale;
  if (ms > static_cast<std::uint64_t>(max.count())) return too_long;
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

bool is_utf8(std::string_view bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= bytes.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(bytes[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr std::uint32_t min_for[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace tether::api
