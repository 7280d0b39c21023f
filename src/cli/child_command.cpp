#include "child_command.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace tether::cli {
namespace {

std::string env_suffix(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c >= 'a' && c <= 'z') out += static_cast<char>(c - 'a' + 'A');
    else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) out += c;
    else out += '_';
  }
  return out;
}

std::string port_of(const std::string& local) {
  return local.substr(local.rfind(':') + 1);
}

// The files execvp would try for `name`, in its order: found here, because between fork and
// exec only async-signal-safe calls are allowed (no PATH lookup that may allocate).
std::vector<std::string> candidates(const std::string& name) {
  if (name.find('/') != std::string::npos) return {name};
  const char* path = std::getenv("PATH");
  const std::string_view dirs = path ? path : "/bin:/usr/bin";
  std::vector<std::string> out;
  for (std::size_t b = 0;;) {
    const auto e = std::min(dirs.find(':', b), dirs.size());
    const auto dir = dirs.substr(b, e - b);
    out.push_back((dir.empty() ? std::string(".") : std::string(dir)) + "/" + name);
    if (e == dirs.size()) break;
    b = e + 1;
  }
  return out;
}

// The child between fork and exec: async-signal-safe calls only. Reports why it could not
// exec (an errno) on `report` and exits 127.
[[noreturn]] void exec_child(pid_t parent, int report, const std::vector<std::string>& files,
                             char* const* args, char* const* envp) {
  // The command gets the default signal dispositions and an empty mask, not tether's (which
  // ignores SIGPIPE, and whose handlers must not run here).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  // The command must not outlive tether, even one killed with SIGKILL: the kernel sends it
  // SIGTERM when the thread that forked it ends. If tether died before this line, the child
  // already belongs to another parent and no signal would come: it ends now instead.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(128 + SIGTERM);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int err = ENOENT;
  bool denied = false;
  for (const auto& f : files) {
    ::execve(f.c_str(), args, envp);
    err = errno;
    denied = denied || err == EACCES;
    if (err != ENOENT && err != ENOTDIR && err != EACCES) break;
  }
  if (denied && (err == ENOENT || err == ENOTDIR)) err = EACCES;  // as execvp says it
  [[maybe_unused]] const auto n = ::write(report, &err, sizeof err);
  ::_exit(127);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> mapping_environment(
    const std::vector<client::mapping_status>& mappings) {
  std::vector<std::pair<std::string, std::string>> env;
  if (mappings.empty()) return env;
  env.emplace_back("TETHER_ADDR", mappings.front().local);
  env.emplace_back("TETHER_PORT", port_of(mappings.front().local));
  for (const auto& m : mappings) {
    const auto suffix = env_suffix(m.name);
    env.emplace_back("TETHER_ADDR_" + suffix, m.local);
    env.emplace_back("TETHER_PORT_" + suffix, port_of(m.local));
  }
  return env;
}

child_command::child_command(asio::any_io_executor ex, std::vector<std::string> argv)
    : ex_(ex), argv_(std::move(argv)), exited_(ex) {}

child_command::~child_command() {
  // tether never leaves its command running behind it: SIGTERM, and SIGKILL for a command
  // that is still there after a grace period (one that ignores SIGTERM must not hang us).
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  constexpr auto grace = std::chrono::seconds(5);
  constexpr auto poll = std::chrono::milliseconds(20);
  for (auto waited = std::chrono::milliseconds(0); waited < grace; waited += poll) {
    const pid_t r = ::waitpid(pid_, nullptr, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) return;
    std::this_thread::sleep_for(poll);
  }
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

void child_command::start(const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<std::string> vars;
  for (char** e = environ; *e; ++e) {
    const std::string_view v(*e);
    const auto name = v.substr(0, v.find('='));
    bool replaced = false;
    for (const auto& [k, _] : env) replaced = replaced || k == name;
    if (!replaced) vars.emplace_back(v);
  }
  for (const auto& [k, v] : env) vars.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);

  // The death signal is tied to the thread that forks, not to the process: only the main
  // thread lasts as long as tether does.
  if (::syscall(SYS_gettid) != ::getpid())
    throw std::logic_error("a command must be started from the main thread");
  const auto files = candidates(argv_.front());
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0)
    throw std::system_error(errno, std::generic_category(), "pipe");
  // Every signal is blocked across fork, so that none reaches one of tether's handlers in
  // the child before exec_child has reset them.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) exec_child(parent, report[1], files, args.data(), envp.data());
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(report[1]);
  if (pid_ < 0) {
    ::close(report[0]);
    pid_ = -1;
    throw std::system_error(fork_errno, std::generic_category(),
                            "cannot run '" + argv_.front() + "'");
  }
  // Closed by a successful exec (close-on-exec); an errno when exec failed.
  int exec_errno = 0;
  ssize_t got;
  while ((got = ::read(report[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (got == sizeof exec_errno) {
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    throw std::system_error(exec_errno, std::generic_category(),
                            "cannot run '" + argv_.front() + "'");
  }
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (fd < 0) {
    const int err = errno;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ended_ = true;
    throw std::system_error(err, std::generic_category(), "pidfd_open");
  }
  exited_.assign(fd);
}

asio::awaitable<int> child_command::wait() {
  asio::error_code ec;
  co_await exited_.async_wait(asio::posix::stream_descriptor::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  ended_ = true;
  exited_.close(ec);
  if (WIFEXITED(status)) co_return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) co_return 128 + WTERMSIG(status);
  co_return 1;
}

void child_command::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

}  // namespace tether::cli
