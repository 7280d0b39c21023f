#include "tether/transport/private_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace tether::transport {
namespace {

namespace fs = std::filesystem;

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

[[noreturn]] void refuse(const fs::path& path, const std::string& why) {
  throw std::runtime_error("'" + path.string() + "' " + why);
}

}  // namespace

void ensure_private_dir(const fs::path& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) refuse(dir, std::string("cannot be read: ") + std::strerror(errno));
    if (dir.has_parent_path()) {
      std::error_code ec;
      fs::create_directories(dir.parent_path(), ec);
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      refuse(dir, std::string("cannot be created: ") + std::strerror(errno));
    if (::lstat(dir.c_str(), &st) != 0)
      refuse(dir, std::string("cannot be read: ") + std::strerror(errno));
    if (S_ISDIR(st.st_mode) && ::chmod(dir.c_str(), 0700) != 0)  // mkdir's mode met the umask
      refuse(dir, std::string("cannot be made private: ") + std::strerror(errno));
    st.st_mode = (st.st_mode & ~07777) | 0700;
  }
  if (S_ISLNK(st.st_mode))
    refuse(dir, "is a symlink; the state directory must be a real directory "
                "(give its target to --state-dir instead)");
  if (!S_ISDIR(st.st_mode)) refuse(dir, "is not a directory");
  if (st.st_uid != ::geteuid())
    refuse(dir, "belongs to another user (uid " + std::to_string(st.st_uid) +
                    "); use a directory of your own");
  // An empty folder of ours (`mkdir state` before the first run) has nothing to expose
  // yet: made private, it is as good as one we made.
  std::error_code empty_ec;
  if ((st.st_mode & 077) && fs::is_empty(dir, empty_ec) && !empty_ec) {
    if (::chmod(dir.c_str(), 0700) != 0)
      refuse(dir, std::string("cannot be made private: ") + std::strerror(errno));
    st.st_mode = (st.st_mode & ~07777) | 0700;
  }
  if (st.st_mode & 077)
    refuse(dir, "has mode " + mode_text(st.st_mode) +
                    ": other users could read the keys and token kept there; run `chmod 700 " +
                    dir.string() + "`");
}

bool check_private_file(const fs::path& file, bool secret) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    refuse(file, std::string("cannot be read: ") + std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode))
    refuse(file, "is a symlink; tether does not follow symlinks in its state directory: "
                 "remove it and tether makes a new one");
  if (!S_ISREG(st.st_mode)) refuse(file, "is not a regular file");
  if (secret && (st.st_mode & 077))
    refuse(file, "has mode " + mode_text(st.st_mode) +
                     ": other users could read it; run `chmod 600 " + file.string() + "`");
  return true;
}

}  // namespace tether::transport
