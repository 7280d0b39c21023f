#pragma once
// The control protocol: line-delimited JSON over a unix socket, one request per line and one
// reply per line (docs/CONTROL.md). Pure encoding and decoding, shared by the control server
// in every client and by `tether map`; no I/O, so it is tested byte for byte.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/client/mapping_status.hpp"
#include "tether/result.hpp"

namespace tether::client {

/// A request line longer than this (without its newline) is refused and ends the control
/// connection: nothing a peer sends is held without bound.
inline constexpr std::size_t max_control_request = 64 * 1024;
/// `tether map` reads replies up to this size (a listing of some thousands of mappings).
inline constexpr std::size_t max_control_reply = 16 * 1024 * 1024;

enum class control_op : std::uint8_t { info, ls, add, rm };

struct control_request {
  control_op op = control_op::ls;
  std::string id;  // the request's "id" as JSON text, echoed in the reply; empty if none
  // add
  std::string spec;  // [BIND:]LPORT:DEVICE:DPORT
  mux::protocol proto = mux::protocol::tcp;
  std::string name;    // empty: a default name
  bool check = false;  // open one stream to the target before answering
  std::string server;  // which server's proxy, when one process has several
  // rm
  std::string mapping;  // a name, a local address, or a bare local port
  bool now = false;     // reset open connections instead of letting them drain
};

struct control_info {
  long pid = 0;
  std::string version;
  std::vector<std::string> servers;
  std::size_t mappings = 0;
};

struct control_reply {
  std::string id;                         // as in the request
  mapping_failure failure;                // code none: "ok": true
  std::vector<mapping_status> mappings;   // ls
  std::optional<mapping_status> mapping;  // add, rm
  std::optional<control_info> info;       // info
};

/// Parses one request line (without its newline). The error's message is what a
/// bad_request reply says ("malformed JSON at byte 7", "unknown op 'lss'").
result<control_request> parse_control_request(std::string_view line);
/// One request line, without the newline.
std::string format_control_request(const control_request& r);

/// One reply line, without the newline. Text that is not UTF-8 is replaced, never thrown on.
std::string format_control_reply(const control_reply& r);
/// Parses a reply line; the error says what is wrong with it.
result<control_reply> parse_control_reply(std::string_view line);

/// One mapping as the JSON object of replies ({"name":...}), and a list of them as an array:
/// what `tether map --json` prints.
std::string format_mapping_json(const mapping_status& m);
std::string format_mappings_json(const std::vector<mapping_status>& all);

/// "2025-03-01T12:34:56Z"
std::string iso8601_utc(std::chrono::system_clock::time_point t);

/// "listening", "session_down", "failed" (JSON); for text, "session down".
const char* mapping_state_name(mapping_state s) noexcept;

/// Which mapping `which` names among `all`: a mapping name first, then a local address
/// ("127.0.0.1:2222", "[::1]:2222"), then a bare local port ("2222") that exactly one
/// mapping listens on. Fails with not_found or ambiguous; on success `.name` is set.
struct resolved_mapping {
  std::string name;
  std::string server;
  mapping_failure failure;
};
resolved_mapping resolve_mapping(const std::vector<mapping_status>& all, std::string_view which);

}  // namespace tether::client
