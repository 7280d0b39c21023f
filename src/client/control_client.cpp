#include "tether/client/control_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tether::client {
namespace {

using clock = std::chrono::steady_clock;

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits until `fd` is ready for `events` or the deadline passes (then throws).
void wait_ready(int fd, short events, clock::time_point deadline, const std::string& where) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0)
      throw std::runtime_error("no answer from the control socket '" + where + "' in time");
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc > 0) return;
    if (rc < 0 && errno != EINTR)
      throw std::runtime_error("control socket '" + where + "': " + std::strerror(errno));
  }
}

}  // namespace

control_reply ask_control(const std::filesystem::path& socket, const control_request& request,
                          std::chrono::milliseconds timeout) {
  const auto where = socket.string();
  const auto deadline = clock::now() + timeout;
  fd_guard fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (where.size() >= sizeof addr.sun_path)
    throw std::runtime_error("control socket path '" + where + "' is too long");
  std::memcpy(addr.sun_path, where.c_str(), where.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == ECONNREFUSED)
      throw std::runtime_error("nothing listens on the control socket '" + where +
                               "' (that client has stopped)");
    if (errno != EAGAIN && errno != EINPROGRESS)
      throw std::runtime_error("cannot reach the control socket '" + where +
                               "': " + std::strerror(errno));
    wait_ready(fd.get(), POLLOUT, deadline, where);
  }

  const auto line = format_control_request(request) + "\n";
  for (std::size_t sent = 0; sent < line.size();) {
    const auto n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) {
      wait_ready(fd.get(), POLLOUT, deadline, where);
      continue;
    }
    throw std::runtime_error("control socket '" + where + "': " + std::strerror(errno));
  }

  std::string in;
  char buf[64 * 1024];
  for (;;) {
    if (const auto nl = in.find('\n'); nl != std::string::npos) {
      in.resize(nl);
      break;
    }
    if (in.size() > max_control_reply)
      throw std::runtime_error("the reply on '" + where + "' is longer than " +
                               std::to_string(max_control_reply) + " bytes");
    const auto n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0)
      throw std::runtime_error("the client closed the control connection '" + where +
                               "' without an answer");
    if (errno == EAGAIN || errno == EINTR) {
      wait_ready(fd.get(), POLLIN, deadline, where);
      continue;
    }
    throw std::runtime_error("control socket '" + where + "': " + std::strerror(errno));
  }
  auto reply = parse_control_reply(in);
  if (!reply) throw std::runtime_error("a malformed reply on '" + where + "': " + reply.message());
  return std::move(reply).value();
}

}  // namespace tether::client
