#pragma once
// The server-wide counts that its limits are checked against (docs/CONFIG.md, "What one
// peer may make the server hold"): pending handshakes, sessions and streams per source
// address and per credential, bad tokens per source. Every worker checks and updates them,
// so each check is made together with the count it allows, under one small mutex: two
// sessions on two workers can never both take the last place. They are touched when a
// connection, session or stream begins or ends, never per byte.
//
// Each begin_* that returns an empty string has counted what it allowed; the matching
// end_* gives it back. A non-empty string is the refusal, naming the limit as the config
// spells it. All members are thread-safe.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "tether/server/config.hpp"

namespace tether::server {

class limit_books {
 public:
  using clock = std::chrono::steady_clock;

  /// A new connection from `source`: refused while the source has too many recent bad
  /// tokens or too many handshakes pending (server-wide or its own).
  std::string begin_handshake(const std::string& source, const server_limits& limits,
                              clock::time_point now = clock::now());
  void end_handshake(const std::string& source);

  /// A bad token from `source`. The table of sources is bounded (max_auth_sources): past it
  /// expired entries are forgotten (at most once a second, the scan is linear), and a new
  /// source that still finds no room is not counted rather than growing the table.
  void note_auth_failure(const std::string& source, const server_limits& limits,
                         clock::time_point now = clock::now());

  /// An authenticated session of `credential` from `source`.
  std::string begin_session(const std::string& source, const std::string& credential,
                            const server_limits& limits);
  void end_session(const std::string& source, const std::string& credential);

  /// A stream of `credential`, against max_streams (server-wide) and
  /// max_streams_per_credential. (max_streams_per_session is the session's own business.)
  std::string begin_stream(const std::string& credential, const server_limits& limits);
  /// Returns the number of streams left server-wide.
  std::uint32_t end_stream(const std::string& credential);

  std::uint32_t streams() const;
  std::uint32_t pending_handshakes() const;
  std::uint32_t sessions_of_credential(const std::string& credential) const;

  static constexpr std::size_t max_auth_sources = 100'000;

 private:
  // Counts by key, dropping keys that fall to zero so the maps hold only what is in use.
  class tally {
   public:
    std::uint32_t operator[](const std::string& key) const;
    void add(const std::string& key) { ++counts_[key]; }
    void remove(const std::string& key);

   private:
    std::unordered_map<std::string, std::uint32_t> counts_;
  };
  struct auth_failures {
    std::uint32_t count = 0;
    clock::time_point window_start;
  };
  bool auth_blocked(const std::string& source, const server_limits& limits, clock::time_point now);

  mutable std::mutex mutex_;
  std::uint32_t pending_handshakes_ = 0;
  tally pending_by_source_;
  tally sessions_by_source_;
  tally sessions_by_credential_;
  std::uint32_t streams_ = 0;
  tally streams_by_credential_;
  std::unordered_map<std::string, auth_failures> auth_failures_by_source_;
  clock::time_point last_auth_prune_;
};

}  // namespace tether::server
