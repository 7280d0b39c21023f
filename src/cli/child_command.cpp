#include "child_command.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
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

  // The command gets the default signal dispositions and mask, not tether's (which ignores
  // SIGPIPE).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const int rc = ::posix_spawnp(&pid_, args[0], nullptr, &attr, args.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    pid_ = -1;
    throw std::system_error(rc, std::generic_category(), "cannot run '" + argv_.front() + "'");
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
