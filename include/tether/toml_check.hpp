#pragma once
// Reading a TOML file written by a person: every error names the file, the line and the key
// ("tunnels.toml:12: tunnel[1].port: 70000 is above the maximum 65535"), unknown keys are
// refused with the nearest known one suggested, and relative paths are relative to the file.
// Shared by the server's config and the client's tunnels file.

#include <toml++/toml.h>

#include "tether/config_error.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tether {

/// "a string", "an integer", ...: what a value is, for messages.
inline const char* toml_type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::none: return "nothing";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
  }
  return "a value";
}

/// Edit distance, to suggest the key a typo meant.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// Checks the values of one file and throws config_error "FILE:LINE: KEY: WHAT".
class toml_checker {
 public:
  explicit toml_checker(std::filesystem::path file)
      : file_(std::move(file)), name_(file_.empty() ? "<config>" : file_.string()) {}

  /// Parses `text`; a syntax error becomes a config_error with its line.
  toml::table parse(std::string_view text) const {
    try {
      return toml::parse(text, name_);
    } catch (const toml::parse_error& e) {
      fail_at(e.source().begin.line, "", std::string(e.description()));
    }
  }

  [[noreturn]] void fail(const toml::node* where, std::string_view key,
                         std::string_view what) const {
    fail_at(where ? where->source().begin.line : 0, key, what);
  }

  [[noreturn]] void fail_at(std::uint32_t line, std::string_view key, std::string_view what) const {
    std::string m = name_;
    if (line > 0) m += ":" + std::to_string(line);
    m += ": ";
    if (!key.empty()) m += std::string(key) + ": ";
    m += what;
    throw config_error(m);
  }

  /// Refuses keys of `tbl` not in `known`, suggesting the nearest known key. `top_level`
  /// lists the keys of the root table: a section holding one of those almost always means
  /// the key was written below a [[...]] header, where TOML puts it in that section.
  template <std::size_t N>
  void only_known_keys(const toml::table& tbl, std::string_view prefix,
                       const std::array<std::string_view, N>& known,
                       std::span<const std::string_view> top_level = {}) const {
    for (auto&& [k, v] : tbl) {
      const std::string_view name = k.str();
      if (std::find(known.begin(), known.end(), name) != known.end()) continue;
      const std::string key = std::string(prefix) + std::string(name);
      if (std::find(top_level.begin(), top_level.end(), name) != top_level.end())
        fail(&v, key, "unknown key here; top-level keys go above the first [[...]] section");
      std::string what = "unknown key";
      std::string_view best;
      std::size_t best_d = 3;  // suggest only close matches
      for (auto cand : known)
        if (auto d = edit_distance(name, cand); d < best_d) best_d = d, best = cand;
      if (!best.empty()) what += " (did you mean '" + std::string(best) + "'?)";
      fail(&v, key, what);
    }
  }

  const std::string* string_of(const toml::node& n, const std::string& key) const {
    if (auto s = n.as_string()) return &s->get();
    fail(&n, key, std::string("expected a string, got ") + toml_type_name(n.type()));
  }

  /// The string `name` of `tbl`, which must be there; `hint` says what it is for.
  const std::string& require_string(const toml::table& tbl, std::string_view name,
                                    const std::string& key, std::string_view hint) const {
    const toml::node* n = tbl.get(name);
    if (!n) fail(&tbl, key, "missing (" + std::string(hint) + ")");
    return *string_of(*n, key);
  }

  /// The integer `name` of `tbl` within [min, max], or `fallback` when absent.
  std::int64_t integer(const toml::table& tbl, std::string_view name, const std::string& key,
                       std::int64_t fallback, std::int64_t min, std::int64_t max) const {
    const toml::node* n = tbl.get(name);
    if (!n) return fallback;
    auto v = n->as_integer();
    if (!v) fail(n, key, std::string("expected an integer, got ") + toml_type_name(n->type()));
    const std::int64_t x = v->get();
    if (x < min) fail(n, key, std::to_string(x) + " is below the minimum " + std::to_string(min));
    if (x > max) fail(n, key, std::to_string(x) + " is above the maximum " + std::to_string(max));
    return x;
  }

  /// integer() of a key that names itself in messages (a top-level key).
  std::int64_t integer(const toml::table& tbl, std::string_view name, std::int64_t fallback,
                       std::int64_t min, std::int64_t max) const {
    return integer(tbl, name, std::string(name), fallback, min, max);
  }

  /// The boolean `name` of `tbl`, or `fallback` when absent.
  bool boolean(const toml::table& tbl, std::string_view name, const std::string& key,
               bool fallback) const {
    const toml::node* n = tbl.get(name);
    if (!n) return fallback;
    auto v = n->as_boolean();
    if (!v) fail(n, key, std::string("expected true or false, got ") + toml_type_name(n->type()));
    return v->get();
  }

  /// The path `name` of `tbl` (non-empty), relative to the file's folder unless absolute;
  /// empty when absent.
  std::filesystem::path path(const toml::table& tbl, std::string_view name,
                             const std::string& key) const {
    const toml::node* n = tbl.get(name);
    if (!n) return {};
    const std::string& p = *string_of(*n, key);
    if (p.empty()) fail(n, key, "empty path");
    return resolve(p);
  }

  std::filesystem::path resolve(const std::filesystem::path& p) const {
    if (p.is_absolute()) return p;
    return file_.parent_path() / p;
  }

  /// The tables of the array of tables `name` ([[name]] sections), none if it is absent.
  std::vector<const toml::table*> tables(const toml::table& tbl, std::string_view name,
                                         const std::string& key) const {
    std::vector<const toml::table*> out;
    const toml::node* n = tbl.get(name);
    if (!n) return out;
    const toml::array* arr = n->as_array();
    if (!arr || (!arr->empty() && !arr->is_array_of_tables()))
      fail(n, key, "expected [[" + key + "]] sections (an array of tables)");
    for (const auto& el : *arr) out.push_back(el.as_table());
    return out;
  }

  const std::string& file() const noexcept { return name_; }

 private:
  std::filesystem::path file_;
  std::string name_;
};

}  // namespace tether
