#include "tether/client/control_path.hpp"

#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tether::client {
namespace {

namespace fs = std::filesystem;

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string user_text(uid_t uid) {
  std::string s = "uid " + std::to_string(uid);
  if (const auto* pw = ::getpwuid(uid)) s += " (" + std::string(pw->pw_name) + ")";
  return s;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : "";
}

fs::path home_folder() {
  if (auto h = env("HOME"); !h.empty()) return h;
  if (const auto* pw = ::getpwuid(::geteuid()); pw && pw->pw_dir && *pw->pw_dir) return pw->pw_dir;
  throw control_path_error(
      "cannot tell where to put the control socket: neither XDG_RUNTIME_DIR nor HOME is set; "
      "give --control PATH");
}

[[noreturn]] void not_yours(const fs::path& p, const char* what, uid_t owner) {
  throw control_path_error(std::string(what) + " '" + p.string() + "' belongs to " +
                           user_text(owner) + ", not to you (" + user_text(::geteuid()) +
                           "): refusing to use it; give --control PATH in a folder of your own");
}

// A unix socket path must fit sockaddr_un; asio would fail later with a vaguer message.
void check_length(const fs::path& socket) {
  if (socket.native().size() >= sizeof(sockaddr_un{}.sun_path))
    throw control_path_error("control socket path '" + socket.string() + "' is longer than " +
                             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                             " bytes, the most a unix socket path may be");
}

enum class probe { listening, refused, gone };

// Whether a process listens on `socket`. A connection that is accepted is closed at once;
// the client sees it end before any request and forgets it.
probe probe_socket(const fs::path& socket) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return probe::listening;  // cannot tell: never remove what may be live
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof(addr.sun_path) - 1);
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  ::close(fd);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
    return probe::listening;  // EAGAIN: backlog full
  if (err == ECONNREFUSED) return probe::refused;
  if (err == ENOENT) return probe::gone;
  return probe::listening;
}

bool pid_alive(long pid) {
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

fs::path default_control_folder() {
  if (auto run = env("XDG_RUNTIME_DIR"); !run.empty()) return fs::path(run) / "tether";
  if (auto state = env("XDG_STATE_HOME"); !state.empty()) return fs::path(state) / "tether" / "run";
  return home_folder() / ".local" / "state" / "tether" / "run";
}

fs::path default_control_socket(long pid) {
  return default_control_folder() / (std::to_string(pid) + ".sock");
}

void prepare_control_folder(const fs::path& folder) {
  struct stat st {};
  if (::lstat(folder.c_str(), &st) != 0) {
    if (errno != ENOENT)
      throw control_path_error("control folder '" + folder.string() +
                               "' cannot be read: " + std::strerror(errno));
    std::error_code ignored;
    if (folder.has_parent_path()) fs::create_directories(folder.parent_path(), ignored);
    if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST)
      throw control_path_error("control folder '" + folder.string() +
                               "' cannot be created: " + std::strerror(errno));
    if (::lstat(folder.c_str(), &st) != 0)
      throw control_path_error("control folder '" + folder.string() +
                               "' cannot be read: " + std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode))
    throw control_path_error("control folder '" + folder.string() +
                             "' is a symlink; remove it and tether makes a real folder");
  if (!S_ISDIR(st.st_mode))
    throw control_path_error("control folder '" + folder.string() + "' is not a folder");
  if (st.st_uid != ::geteuid()) not_yours(folder, "control folder", st.st_uid);
  if (st.st_mode & 022)
    throw control_path_error("control folder '" + folder.string() + "' has mode " +
                             mode_text(st.st_mode) +
                             ": other users could replace the sockets "
                             "in it; run `chmod 700 " +
                             folder.string() + "`");
}

void check_control_folder(const fs::path& folder) {
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0)
    throw std::runtime_error("control folder '" + folder.string() +
                             "' cannot be read: " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    throw control_path_error("control folder '" + folder.string() + "' is not a folder");
  const bool mine = st.st_uid == ::geteuid();
  const bool safe_system_folder = st.st_uid == 0 && (!(st.st_mode & 022) || (st.st_mode & S_ISVTX));
  if (!mine && !safe_system_folder) not_yours(folder, "control folder", st.st_uid);
  if (mine && (st.st_mode & 022) && !(st.st_mode & S_ISVTX))
    throw control_path_error("control folder '" + folder.string() + "' has mode " +
                             mode_text(st.st_mode) +
                             ": other users could replace the socket; "
                             "run `chmod go-w " +
                             folder.string() + "`");
}

void clear_stale_socket(const fs::path& socket) {
  check_length(socket);
  struct stat st {};
  if (::lstat(socket.c_str(), &st) != 0) return;  // nothing there (or unreadable: bind says)
  if (!S_ISSOCK(st.st_mode))
    throw control_path_error("'" + socket.string() +
                             "' exists and is not a socket; give --control another path");
  if (st.st_uid != ::geteuid()) not_yours(socket, "control socket", st.st_uid);
  switch (probe_socket(socket)) {
    case probe::listening:
      throw control_path_error("control socket '" + socket.string() +
                               "' is in use by another running tether; give --control another "
                               "path");
    case probe::refused:  // left by a process that died: ours to replace
      ::unlink(socket.c_str());
      return;
    case probe::gone:
      return;
  }
}

void check_control_socket(const fs::path& socket) {
  check_length(socket);
  check_control_folder(socket.has_parent_path() ? socket.parent_path() : fs::path("."));
  struct stat st {};
  if (::lstat(socket.c_str(), &st) != 0)
    throw std::runtime_error("no control socket at '" + socket.string() +
                             "' (is that client running?)");
  if (!S_ISSOCK(st.st_mode)) throw control_path_error("'" + socket.string() + "' is not a socket");
  if (st.st_uid != ::geteuid()) not_yours(socket, "control socket", st.st_uid);
}

std::vector<running_client> find_running_clients(const fs::path& folder) {
  std::vector<running_client> found;
  struct stat fst {};
  if (::lstat(folder.c_str(), &fst) != 0) return found;
  prepare_control_folder(folder);  // exists: only checks it
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const auto name = entry.path().filename().string();
    if (name.size() <= 5 || !name.ends_with(".sock")) continue;
    const auto digits = name.substr(0, name.size() - 5);
    if (digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) ||
        st.st_uid != ::geteuid())
      continue;  // not one of ours: leave it alone
    const long pid = std::stol(digits);
    if (!pid_alive(pid)) {
      ::unlink(entry.path().c_str());
      continue;
    }
    const auto p = probe_socket(entry.path());
    if (p == probe::refused) ::unlink(entry.path().c_str());  // the pid now is another process
    if (p != probe::listening) continue;
    found.push_back({pid, entry.path()});
  }
  std::sort(found.begin(), found.end(),
            [](const running_client& a, const running_client& b) { return a.pid < b.pid; });
  return found;
}

}  // namespace tether::client
