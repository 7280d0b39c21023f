#pragma once
// Streams on their way between two sessions of one client (docs/PROTOCOL.md, "Lanes"):
// the device connection waits here from the MOVE on the session it leaves until the claim
// on the session that goes on with it, which may be served by another worker. Shared by
// every worker; each call takes one small lock (a move, not a byte, goes through it).

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "tether/mux/tunnel.hpp"
#include "tether/relay/detached_socket.hpp"
#include "tether/wire/frame.hpp"

namespace tether::server {

struct parked_stream {
  relay::detached_socket connection;  // to the device
  std::string credential;             // only sessions of this credential may claim it
  mux::target target;                 // where it goes, for the ACL, logs and meters
  std::uint64_t bytes_to_device = 0;  // so far, for the log line at its end
  std::uint64_t bytes_from_device = 0;
};

class moved_streams {
 public:
  /// At most `capacity` streams wait at a time, `per_credential` of them for one credential
  /// (a client that moves streams and never claims them fills only its own share), each at
  /// most `ttl`; past it they are closed (their device sees a reset).
  explicit moved_streams(std::size_t capacity = 4096,
                         std::chrono::milliseconds ttl = std::chrono::seconds(10),
                         std::size_t per_credential = 64);

  /// Keeps `s` for the claim of `token`. False (and `s` closed) when the table or the
  /// credential's share of it is full, or the token is taken.
  bool park(const wire::move_token& token, parked_stream s);

  /// The stream parked under `token` for `credential`, taken out; nullopt if there is
  /// none (not yet parked, expired, claimed, or another credential's).
  std::optional<parked_stream> claim(const wire::move_token& token, std::string_view credential);

  /// Closes the streams nobody claimed within the ttl; returns how many.
  std::size_t expire();
  /// Closes every stream parked (the server stops); returns how many.
  std::size_t clear();

  std::size_t size() const;

 private:
  struct entry {
    parked_stream stream;
    std::chrono::steady_clock::time_point deadline;
  };
  std::size_t expire_locked(std::chrono::steady_clock::time_point now);

  const std::size_t capacity_;
  const std::size_t per_credential_;
  const std::chrono::milliseconds ttl_;
  mutable std::mutex mutex_;
  std::map<wire::move_token, entry> parked_;
};

}  // namespace tether::server
