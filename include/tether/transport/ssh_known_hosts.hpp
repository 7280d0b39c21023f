#pragma once
// OpenSSH known_hosts: parsing, host matching and key checking, as OpenSSH does it.
// Host names are matched as "host" for port 22 and "[host]:port" otherwise, against plain
// patterns (with *, ? and !negation) or hashed "|1|salt|hmac" names. @revoked lines refuse a
// key; @cert-authority lines are ignored (we do not check host certificates).
// Parsing and checking are pure; load() and append_known_host() touch one file.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tether/result.hpp"

namespace tether::transport {

struct known_host_entry {
  enum class marker { none, revoked, cert_authority };
  std::size_t line = 0;  // 1-based line number, for messages
  marker mark = marker::none;
  std::string hosts;     // the host field as written: patterns, or one |1|salt|hash name
  std::string key_type;  // "ssh-ed25519", "ecdsa-sha2-nistp256", ...
  std::string key_blob;  // the decoded public key
};

/// "host" for port 22, "[host]:port" otherwise; lower-cased, as OpenSSH looks hosts up.
std::string known_host_name(std::string_view host, std::uint16_t port);

/// True when `name` matches the known_hosts host field `hosts` (a comma-separated pattern
/// list, where a matching !pattern vetoes the line, or a single hashed |1|salt|hash name).
bool known_host_field_matches(std::string_view hosts, std::string_view name);

/// One line for `name` (see known_host_name) and a key blob: "name type base64\n".
std::string known_hosts_line(std::string_view name, std::string_view key_blob);

class known_hosts {
 public:
  enum class status {
    match,       // a line for this host holds exactly this key
    not_found,   // no line for this host at all
    changed,     // a line for this host holds another key of the same type
    other_type,  // lines for this host hold only keys of other types
    revoked,     // an @revoked line holds this key
  };
  struct verdict {
    status what = status::not_found;
    const known_host_entry* entry = nullptr;  // the line that matched or conflicts
  };

  /// Parses known_hosts text. Lines it cannot read (bad base64, old RSA1 format) are skipped,
  /// as OpenSSH skips them.
  static known_hosts parse(std::string_view text);

  /// Reads and parses `file`; a missing file is an empty known_hosts.
  static result<known_hosts> load(const std::filesystem::path& file);

  /// The key types held for `name`, in file order, without duplicates: the host key
  /// algorithms to prefer, so the server proves the key we already know.
  std::vector<std::string> key_types_for(std::string_view name) const;

  /// Checks `key_blob` offered by the server known as `name`.
  verdict check(std::string_view name, std::string_view key_blob) const;

  const std::vector<known_host_entry>& entries() const { return entries_; }

 private:
  std::vector<known_host_entry> entries_;
};

/// Appends `line` to `file`, creating it (mode 0600) and its directory (0700) if needed, and
/// adding a newline first if the file does not end with one.
result<std::monostate> append_known_host(const std::filesystem::path& file, std::string_view line);

}  // namespace tether::transport
