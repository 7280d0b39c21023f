#pragma once
// What the local proxy reports to its user. The CLI prints these as text or JSON lines;
// tests can collect them.

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "tether/client/mapping.hpp"
#include "tether/errc.hpp"

namespace tether::client {

class event_sink {
 public:
  virtual ~event_sink() = default;
  /// The listener of mapping `name` is ready; `local` is "127.0.0.1:40123" (the real port
  /// when LPORT was 0).
  virtual void listening(const mapping& m, const std::string& name, const std::string& local) = 0;
  /// A tunnel session is up.
  virtual void connected(const std::string& server) = 0;
  /// The session ended or could not be made; the next attempt is in `retry_in`.
  virtual void disconnected(const std::string& reason, std::chrono::milliseconds retry_in) = 0;
  /// The server is going away (GOAWAY: it stops gracefully). Its session takes no new
  /// streams, but the `continuing` streams open on it carry on until they end; a new session
  /// is dialled at once for new ones.
  virtual void going_away(std::size_t continuing) {
    (void)continuing;
    disconnected("going away", std::chrono::milliseconds(0));
  }
  /// A local connection could not be tunnelled and was closed.
  virtual void stream_error(const mapping& m, const std::string& local, errc reason,
                            const std::string& message) = 0;
};

}  // namespace tether::client
