#pragma once
// Text that came from a peer, made safe to log or print: a peer must not be able to forge a
// log line with a newline or drive the operator's terminal with escape sequences.

#include <string>
#include <string_view>

namespace tether {

/// Printable ASCII is kept as is (a backslash is doubled); \n, \r and \t become those two
/// characters, every other byte (control characters, DEL, bytes >= 0x80) becomes \xHH.
/// Valid UTF-8 is escaped too: the point is that what reaches a log is plain ASCII.
std::string printable(std::string_view peer_text);

}  // namespace tether
