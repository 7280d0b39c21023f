#pragma once
// Pure helpers for the API's text: URL-encoded forms and query strings, and UTF-8 checks.
// No I/O; every input is bounded by its caller (the body and URL limits).

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tether/result.hpp"

namespace tether::api {

using form_fields = std::vector<std::pair<std::string, std::string>>;

/// Parses `a=1&b=x%20y` (application/x-www-form-urlencoded, also query strings): `+` is a
/// space, %HH a byte. At most `max_fields` fields. Fails on a bad %-escape.
result<form_fields> parse_form(std::string_view text, std::size_t max_fields = 64);

/// The first value of `name`, or nullptr.
const std::string* form_value(const form_fields& fields, std::string_view name);

/// Decodes %HH escapes of one path segment; fails on a bad escape.
result<std::string> percent_decode(std::string_view text, bool plus_is_space = false);

/// %-encodes everything but unreserved characters (RFC 3986), for URLs the CLI builds.
std::string percent_encode(std::string_view text);

/// The longest duration parse_duration takes unless told otherwise.
inline constexpr std::chrono::milliseconds max_duration = std::chrono::hours(24);

/// A number, whole or decimal, and a unit: ms, s, m or h ("500ms", "0.5s", "2m", "1.5h"); a
/// bare number is seconds. Fails, saying why, on anything else, a negative, a fraction of a
/// millisecond, or more than `max` ("too long (at most 24h)").
result<std::chrono::milliseconds> parse_duration(std::string_view text,
                                                 std::chrono::milliseconds max = max_duration);

/// "24h", "90m", "30s", "1500ms": the largest unit that says `d` exactly.
std::string duration_text(std::chrono::milliseconds d);

/// True if `bytes` is well-formed UTF-8 (no overlongs, surrogates or code points past
/// U+10FFFF).
bool is_utf8(std::string_view bytes);

}  // namespace tether::api
