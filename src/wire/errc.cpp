#include "tether/errc.hpp"

#include <string>

namespace tether {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tether"; }
  std::string message(int v) const override { return describe(static_cast<errc>(v)); }
};

}  // namespace

const std::error_category& tether_category() noexcept {
  static const category instance;
  return instance;
}

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::unknown_device: return "unknown device";
    case errc::forbidden: return "forbidden by the access list";
    case errc::refused: return "connection refused by the device";
    case errc::unreachable: return "device unreachable";
    case errc::timed_out: return "timed out";
    case errc::bad_token: return "authentication failed: token rejected";
    case errc::protocol_error: return "protocol error";
    case errc::flow_control_error: return "flow control violation";
    case errc::frame_too_large: return "frame too large";
    case errc::version_mismatch: return "protocol version mismatch";
    case errc::too_many_streams: return "too many streams";
    case errc::going_away: return "going away";
    case errc::stream_reset: return "stream reset by peer";
    case errc::session_lost: return "tunnel session lost";
    case errc::internal: return "internal error";
    case errc::unsupported: return "not supported";
    case errc::ssh_forwarding_denied: return "the SSH server refused to forward to the target";
    case errc::untrusted_host: return "the server's host key is not trusted";
    case errc::limit_reached: return "a limit of the server was reached";
  }
  return "unknown error";
}

errc errc_from_wire(std::uint8_t v) noexcept {
  // 17 and 18 name outcomes of our own SSH transport; no tether peer sends them.
  if (v <= static_cast<std::uint8_t>(errc::unsupported)) return static_cast<errc>(v);
  if (v == static_cast<std::uint8_t>(errc::limit_reached)) return errc::limit_reached;
  return errc::internal;
}

const char* errc_name(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return "ok";
    case errc::unknown_device:
      return "unknown_device";
    case errc::forbidden:
      return "forbidden";
    case errc::refused:
      return "refused";
    case errc::unreachable:
      return "unreachable";
    case errc::timed_out:
      return "timed_out";
    case errc::bad_token:
      return "bad_token";
    case errc::protocol_error:
      return "protocol_error";
    case errc::flow_control_error:
      return "flow_control_error";
    case errc::frame_too_large:
      return "frame_too_large";
    case errc::version_mismatch:
      return "version_mismatch";
    case errc::too_many_streams:
      return "too_many_streams";
    case errc::going_away:
      return "going_away";
    case errc::stream_reset:
      return "stream_reset";
    case errc::session_lost:
      return "session_lost";
    case errc::internal:
      return "internal";
    case errc::unsupported:
      return "unsupported";
    case errc::ssh_forwarding_denied:
      return "forwarding_denied";
    case errc::untrusted_host:
      return "untrusted_host";
    case errc::limit_reached:
      return "limit_reached";
  }
  return "internal";
}

}  // namespace tether
