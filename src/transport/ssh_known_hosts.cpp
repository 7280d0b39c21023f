#include "tether/transport/ssh_known_hosts.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "tether/transport/ssh_util.hpp"

namespace tether::transport {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

// OpenSSH's match_pattern: '*' matches any run, '?' one character. Both sides lower-cased.
bool glob_match(std::string_view s, std::string_view p) {
  std::size_t si = 0, pi = 0, star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++si;
      ++pi;
    } else if (pi < p.size() && p[pi] == '*') {
      star_p = pi++;
      star_s = si;
    } else if (star_p != std::string_view::npos) {
      pi = star_p + 1;
      si = ++star_s;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool hashed_matches(std::string_view field, std::string_view name) {
  // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
  field.remove_prefix(3);
  const auto bar = field.find('|');
  if (bar == std::string_view::npos) return false;
  const auto salt = base64_decode(field.substr(0, bar));
  const auto want = base64_decode(field.substr(bar + 1));
  if (!salt || !want || want->size() != 20) return false;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), salt->data(), int(salt->size()),
       reinterpret_cast<const unsigned char*>(name.data()), name.size(), md, &len);
  return len == want->size() && std::memcmp(md, want->data(), len) == 0;
}

std::string_view next_field(std::string_view& line) {
  const auto start = line.find_first_not_of(" \t");
  if (start == std::string_view::npos) {
    line = {};
    return {};
  }
  line.remove_prefix(start);
  const auto end = std::min(line.find_first_of(" \t"), line.size());
  const auto field = line.substr(0, end);
  line.remove_prefix(end);
  return field;
}

}  // namespace

std::string known_host_name(std::string_view host, std::uint16_t port) {
  if (port == 22) return lower(host);
  return "[" + lower(host) + "]:" + std::to_string(port);
}

bool known_host_field_matches(std::string_view hosts, std::string_view name) {
  if (hosts.starts_with("|1|")) return hashed_matches(hosts, name);
  const auto host = lower(name);
  bool positive = false;
  while (!hosts.empty()) {
    const auto comma = std::min(hosts.find(','), hosts.size());
    auto pattern = hosts.substr(0, comma);
    hosts.remove_prefix(std::min(comma + 1, hosts.size()));
    const bool negated = pattern.starts_with('!');
    if (negated) pattern.remove_prefix(1);
    if (pattern.empty() || !glob_match(host, lower(pattern))) continue;
    if (negated) return false;  // a matching negation vetoes the whole line
    positive = true;
  }
  return positive;
}

std::string known_hosts_line(std::string_view name, std::string_view key_blob) {
  std::string line(name);
  line += ' ';
  line += ssh_key_type_of_blob(key_blob);
  line += ' ';
  line += base64_encode(key_blob);
  line += '\n';
  return line;
}

known_hosts known_hosts::parse(std::string_view text) {
  known_hosts out;
  std::size_t number = 0;
  while (!text.empty()) {
    const auto nl = std::min(text.find('\n'), text.size());
    auto line = text.substr(0, nl);
    text.remove_prefix(std::min(nl + 1, text.size()));
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    known_host_entry e;
    e.line = number;
    auto field = next_field(line);
    if (field.empty() || field.starts_with('#')) continue;
    if (field.starts_with('@')) {
      if (field == "@revoked") {
        e.mark = known_host_entry::marker::revoked;
      } else if (field == "@cert-authority") {
        e.mark = known_host_entry::marker::cert_authority;
      } else {
        continue;  // a marker we do not know: OpenSSH skips the line too
      }
      field = next_field(line);
    }
    e.hosts = std::string(field);
    const auto type = next_field(line);
    const auto key = next_field(line);
    if (e.hosts.empty() || type.empty() || key.empty()) continue;
    if (std::isdigit(static_cast<unsigned char>(type.front()))) continue;  // SSH1 "bits e n"
    auto blob = base64_decode(key);
    if (!blob || ssh_key_type_of_blob(*blob) != type) continue;
    e.key_type = std::string(type);
    e.key_blob = std::move(*blob);
    out.entries_.push_back(std::move(e));
  }
  return out;
}

result<known_hosts> known_hosts::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return known_hosts{};
    return error{"cannot read known hosts file " + file.string() + ": " + std::strerror(errno)};
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str());
}

std::vector<std::string> known_hosts::key_types_for(std::string_view name) const {
  std::vector<std::string> types;
  for (const auto& e : entries_) {
    if (e.mark != known_host_entry::marker::none) continue;
    if (!known_host_field_matches(e.hosts, name)) continue;
    if (std::find(types.begin(), types.end(), e.key_type) == types.end())
      types.push_back(e.key_type);
  }
  return types;
}

known_hosts::verdict known_hosts::check(std::string_view name, std::string_view key_blob) const {
  const auto type = ssh_key_type_of_blob(key_blob);
  verdict changed{status::not_found, nullptr};
  const known_host_entry* other = nullptr;
  const known_host_entry* match = nullptr;
  for (const auto& e : entries_) {
    if (e.mark == known_host_entry::marker::cert_authority) continue;
    if (!known_host_field_matches(e.hosts, name)) continue;
    if (e.mark == known_host_entry::marker::revoked) {
      if (e.key_blob == key_blob) return {status::revoked, &e};
      continue;
    }
    if (e.key_blob == key_blob) {
      if (!match) match = &e;
    } else if (e.key_type == type) {
      if (!changed.entry) changed = {status::changed, &e};
    } else if (!other) {
      other = &e;
    }
  }
  // A matching line wins over a conflicting one, as in OpenSSH (a host may list several keys).
  if (match) return {status::match, match};
  if (changed.entry) return changed;
  if (other) return {status::other_type, other};
  return {};
}

result<std::monostate> append_known_host(const std::filesystem::path& file, std::string_view line) {
  std::error_code ec;
  const auto dir = file.parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return error{"cannot create " + dir.string() + ": " + ec.message()};
    ::chmod(dir.c_str(), 0700);
  }
  bool needs_newline = false;
  const bool existed = std::filesystem::exists(file, ec);
  if (existed) {
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    if (in && in.tellg() > 0) {
      in.seekg(-1, std::ios::end);
      needs_newline = in.get() != '\n';
    }
  }
  std::ofstream out(file, std::ios::binary | std::ios::app);
  if (!out)
    return error{"cannot write known hosts file " + file.string() + ": " + std::strerror(errno)};
  if (!existed) ::chmod(file.c_str(), 0600);
  if (needs_newline) out << '\n';
  out << line;
  out.flush();
  if (!out) return error{"cannot write known hosts file " + file.string()};
  return std::monostate{};
}

}  // namespace tether::transport
