#pragma once
// What is connected and what is flowing, readable from any thread (the HTTP API's devices
// and sessions, docs/API.md): the live sessions with their streams and bytes by protocol,
// and each device's open streams, bytes and last dial.
//
// Threads: a session registers itself on its worker when its HELLO is accepted and leaves
// when it ends (one small mutex, taken then and when a snapshot is read); its streams count
// themselves in relaxed atomics as their bytes pass (metered_channel below), never taking a
// lock. A device's entry is made under the device_activity mutex the first time a stream
// or a dial names it, then updated through atomics; its last dial result is kept behind the
// same mutex (one write per dial, not per byte).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/errc.hpp"
#include "tether/mux/channel.hpp"
#include "tether/mux/tunnel.hpp"

namespace tether::server {

/// Streams and bytes of one protocol, counted as they pass. Relaxed atomics: a reader may
/// see one counter a little ahead of another, never a torn value.
struct traffic_meter {
  std::atomic<std::uint64_t> streams_open{0};
  std::atomic<std::uint64_t> streams_opened{0};
  std::atomic<std::uint64_t> bytes_to_device{0};
  std::atomic<std::uint64_t> bytes_from_device{0};
};

/// A plain copy of a traffic_meter.
struct traffic_snapshot {
  std::uint64_t streams_open = 0;
  std::uint64_t streams_opened = 0;
  std::uint64_t bytes_to_device = 0;
  std::uint64_t bytes_from_device = 0;

  traffic_snapshot& operator+=(const traffic_snapshot& o) noexcept;
};

traffic_snapshot read_meter(const traffic_meter& m) noexcept;

/// One live session. The names are set once; the meters move as its streams do.
struct session_entry {
  std::uint64_t id = 0;
  std::string credential;  // its name
  std::string peer;        // address:port
  std::string agent_for;   // an agent's session: its device; empty for a client's
  bool bulk_lane = false;  // a client's second session (docs/PROTOCOL.md, "Lanes")
  std::chrono::system_clock::time_point since;
  std::array<traffic_meter, mux::protocol_count> by_protocol;
};

struct session_snapshot {
  std::uint64_t id = 0;
  std::string credential;
  std::string peer;
  std::string agent_for;
  bool bulk_lane = false;
  std::chrono::system_clock::time_point since;
  std::array<traffic_snapshot, mux::protocol_count> by_protocol;
};

class session_directory {
 public:
  /// Lists a session from now on; it stays listed while the entry is held by its session
  /// and until remove(). Thread-safe.
  std::shared_ptr<session_entry> add(std::string credential, std::string peer,
                                     std::string agent_for, bool bulk_lane = false);
  /// Thread-safe; removing an entry twice is harmless.
  void remove(const std::shared_ptr<session_entry>& entry);

  /// The listed sessions, oldest first, at most `max` of them (the newest are dropped);
  /// `total` is set to how many are listed. Thread-safe.
  std::vector<session_snapshot> snapshot(std::size_t max, std::size_t* total = nullptr) const;

  std::size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::shared_ptr<session_entry>> sessions_;
};

/// The last time the server dialed a direct device (a TCP stream or an API message).
struct dial_result {
  bool ok = false;
  errc code = errc::ok;  // why not, when !ok
  std::string message;   // in words, without the device's address
  std::chrono::system_clock::time_point at;
};

struct device_snapshot {
  std::array<traffic_snapshot, mux::protocol_count> by_protocol;
  std::optional<dial_result> last_dial;

  traffic_snapshot total() const noexcept;
};

/// Each device's traffic and last dial, by id.
class device_activity {
 public:
  /// The meter of `device` (made on first use). Thread-safe; the pointer stays valid as
  /// long as the device_activity does.
  std::shared_ptr<std::array<traffic_meter, mux::protocol_count>> meter(std::string_view device);

  /// Records a dial's outcome. Thread-safe.
  void dialed(std::string_view device, dial_result result);

  /// What is known of `device` (all zeros and no dial when nothing is). Thread-safe.
  device_snapshot find(std::string_view device) const;

 private:
  struct entry {
    std::shared_ptr<std::array<traffic_meter, mux::protocol_count>> meters =
        std::make_shared<std::array<traffic_meter, mux::protocol_count>>();
    std::optional<dial_result> last_dial;
  };
  // A bound on the entries: past it, devices no longer in use are forgotten first. Ids come
  // from the registry (and API requests checked against it), so this only guards against
  // a registry that is reloaded many times with new ids.
  static constexpr std::size_t max_devices = 100000;
  // The device's entry, made if new; the caller holds mutex_.
  entry& entry_of(std::string_view device);

  mutable std::mutex mutex_;
  std::map<std::string, entry, std::less<>> devices_;
};

/// Wraps an accepted stream so that its bytes count in its session's and its device's
/// meters (for `t.proto`) as they pass; the stream counts as open while the wrapper lives.
/// Either meter may be null. The wrapper forwards every call unchanged. A `resumed` stream
/// (one that moved here from another session of its client) counts as opened on its new
/// session, but not again for its device.
std::unique_ptr<mux::channel> metered_channel(
    std::unique_ptr<mux::channel> inner, mux::protocol proto,
    std::shared_ptr<session_entry> session,
    std::shared_ptr<std::array<traffic_meter, mux::protocol_count>> device, bool resumed = false);

/// `{"sessions": [...], "total": N}` as GET /api/v1/sessions answers (docs/API.md).
std::string sessions_json(const std::vector<session_snapshot>& sessions, std::size_t total);

}  // namespace tether::server
