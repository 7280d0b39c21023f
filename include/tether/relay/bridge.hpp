#pragma once
// A channel spliced to another channel: a client's stream on the server relayed into a
// stream on an agent's session (docs/AGENTS.md). The two may belong to sessions on
// different threads; each is then only ever touched on its own executor.

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <cstdint>

#include "tether/mux/channel.hpp"
#include "tether/relay/datagram.hpp"

namespace tether::relay {

/// A channel and the executor of the session it belongs to (where every call on it must be
/// made).
struct owned_channel {
  mux::channel& ch;
  asio::any_io_executor executor;
};

struct bridge_result {
  std::uint64_t a_to_b = 0;  // bytes (or datagram bytes) received on a and sent on b
  std::uint64_t b_to_a = 0;
  datagram_counters datagrams;  // datagram streams: "to_channel" is b → a, "from" a → b
  asio::error_code error;       // the first failure, or empty when both ends finished
};

/// Relays `a` ⇄ `b` until both directions are done. Call on a's executor; b's calls are
/// made on b's (the same one costs nothing more).
///
/// Byte streams: end-of-stream on one becomes a half-close (FIN) on the other; a failure
/// of one resets the other with the same reason (a tether errc; others as stream_reset).
/// Bytes are given back to the sender's window only once the other channel took them, so
/// the bridge holds at most one received chunk per direction: a slow reader on one side
/// slows the sender on the other, and nothing is buffered beyond the two windows. Across
/// threads that chunk is copied and handed over (posted); on one thread it is not copied.
///
/// Datagram streams (`datagrams` true): each datagram goes whole, or is dropped when the
/// other channel cannot take it now (never queued, never waited for); the flow ends when
/// either channel fails, and the other is reset with the reason.
///
/// Completes without throwing.
asio::awaitable<bridge_result> bridge(owned_channel a, owned_channel b, bool datagrams);

}  // namespace tether::relay
