#pragma once
// What counts as a host users may name: shared by the client's URLs and -L specs and the
// server's config. Pure checks; nothing is resolved.

#include <string_view>

namespace tether::transport {

/// True for a host name, an IPv4 literal or an IPv6 literal without brackets.
bool is_valid_host(std::string_view host);

}  // namespace tether::transport
