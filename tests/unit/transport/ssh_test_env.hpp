#pragma once
// Test support for the SSH transport tests: runs programs (ssh-keygen, ssh-agent), a private
// OpenSSH sshd on loopback with its own config and host keys, and small loopback peers.
// Everything a test starts it also stops: sshd and the per-connection sshd processes it
// forked are killed when the sshd object goes.

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace tether::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

inline std::string current_user() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw ? pw->pw_name : "root";
}

// Waits for `cond` with a deadline, checking every few milliseconds.
inline bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

class temp_dir {
 public:
  temp_dir() {
    std::string t = (fs::temp_directory_path() / "tether-ssh-XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path_ = t;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Starts a program; stdout and stderr go to `output` (or are discarded). The child gets
// SIGTERM if the test process dies first, so a crashed test leaves no sshd behind.
inline pid_t spawn(const std::vector<std::string>& argv, const fs::path& output = "/dev/null",
                   const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (const auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string out = output.string();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {  // only async-signal-safe calls until exec
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    const int in = ::open("/dev/null", O_RDONLY);
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in < 0 || fd < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execvpe(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

// Runs a program to completion (bounded: it is killed after `limit`); returns its exit
// status, and its output in `out` if given.
inline int run(const std::vector<std::string>& argv, std::string* out = nullptr,
               const std::vector<std::string>& extra_env = {},
               std::chrono::milliseconds limit = 30s) {
  const temp_dir tmp;
  const auto log = tmp.path() / "out";
  const pid_t pid = spawn(argv, log, extra_env);
  int status = 0;
  const bool exited = wait_for([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, limit);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    throw std::runtime_error(argv[0] + " did not finish");
  }
  if (out) *out = read_text(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Kills every descendant of `root` (not `root` itself), deepest last found first.
inline void kill_descendants(pid_t root, int sig) {
  std::vector<pid_t> found{root};
  for (std::size_t i = 0; i < found.size(); ++i) {
    DIR* d = ::opendir("/proc");
    if (!d) return;
    while (const dirent* e = ::readdir(d)) {
      const pid_t pid = std::atoi(e->d_name);
      if (pid <= 0) continue;
      std::ifstream stat(fs::path("/proc") / e->d_name / "stat");
      std::string line;
      std::getline(stat, line);
      const auto close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 2));
      char state = 0;
      pid_t ppid = 0;
      rest >> state >> ppid;
      if (ppid == found[i]) found.push_back(pid);
    }
    ::closedir(d);
  }
  for (std::size_t i = found.size(); i-- > 1;) ::kill(found[i], sig);
}

inline std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Host keys for sshd and user keys for the client, made once per build and kept beside the
// test binary: ctest runs every test in a process of its own, two at a time, and making the
// seven keys (one of them RSA 2048) took about half a second in each.
struct ssh_keys {
  fs::path dir;
  fs::path host_ed25519, host_ecdsa;
  fs::path user_ed25519;    // authorized
  fs::path user_other;      // not authorized
  fs::path user_rsa;        // authorized, but libssh2 can only sign it with SHA-1
  fs::path user_encrypted;  // authorized, passphrase below
  fs::path user_agent;      // authorized, used through ssh-agent
  static inline const std::string passphrase = "correct horse battery";
  fs::path authorized_keys;

  ssh_keys() : dir(shared_dir()) {
    host_ed25519 = dir / "host_ed25519";
    host_ecdsa = dir / "host_ecdsa";
    user_ed25519 = dir / "id_ed25519";
    user_other = dir / "id_other";
    user_rsa = dir / "id_rsa";
    user_encrypted = dir / "id_encrypted";
    user_agent = dir / "id_agent";
    authorized_keys = dir / "authorized_keys";
  }

  static fs::path pub(const fs::path& key) {
    auto p = key;
    p += ".pub";
    return p;
  }

  // "type base64" of a key's public half.
  static std::string public_key(const fs::path& key) {
    std::istringstream in(read_text(pub(key)));
    std::string type, b64;
    in >> type >> b64;
    return type + " " + b64;
  }

  // What `ssh-keygen -l` prints as the key's fingerprint ("SHA256:...").
  static std::string fingerprint(const fs::path& key) {
    std::string out;
    run({"ssh-keygen", "-l", "-E", "sha256", "-f", pub(key).string()}, &out);
    std::istringstream in(out);
    std::string bits, fp;
    in >> bits >> fp;
    return fp;
  }

 private:
  // The keys' folder, made complete under a temporary name and then renamed into place: a
  // rename is atomic, so a process sees the folder whole or not at all, and when two make it
  // at once the one that loses the rename uses the winner's. A change to the set of keys
  // needs a new folder name.
  static fs::path shared_dir() {
    const auto final_dir = fs::read_symlink("/proc/self/exe").parent_path() / "ssh-test-keys-1";
    if (fs::exists(final_dir / "authorized_keys")) return final_dir;
    std::string t = (final_dir.parent_path() / "ssh-test-keys-XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    const fs::path d = t;
    make(d / "host_ed25519", "ed25519");
    make(d / "host_ecdsa", "ecdsa");
    const auto user = make(d / "id_ed25519", "ed25519");
    make(d / "id_other", "ed25519");
    const auto rsa = make(d / "id_rsa", "rsa", "", {"-b", "2048"});
    const auto encrypted = make(d / "id_encrypted", "ed25519", passphrase);
    const auto agent = make(d / "id_agent", "ecdsa");
    write_text(d / "authorized_keys", read_text(pub(user)) + read_text(pub(rsa)) +
                                          read_text(pub(encrypted)) + read_text(pub(agent)));
    if (::rename(d.c_str(), final_dir.c_str()) != 0) {
      std::error_code ec;
      fs::remove_all(d, ec);
      if (!fs::exists(final_dir / "authorized_keys"))
        throw std::runtime_error("could not keep the test keys in " + final_dir.string());
    }
    return final_dir;
  }

  static fs::path make(const fs::path& path, const std::string& type, const std::string& pass = "",
                       std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{"ssh-keygen", "-q", "-t",          type, "-N",
                                  pass,         "-C", "tether-test", "-f", path.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (run(argv) != 0) throw std::runtime_error("ssh-keygen failed for " + path.string());
    return path;
  }
};

// A private sshd: key authentication only, our host keys, listening on 127.0.0.1.
class sshd {
 public:
  sshd(const ssh_keys& keys, const std::string& extra_config = "") {
    std::error_code ec;
    fs::create_directories("/run/sshd", ec);  // privilege separation needs it when run as root
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_loopback_port();
      config_ = dir_.path() / "sshd_config";
      log_ = dir_.path() / ("sshd-" + std::to_string(attempt) + ".log");
      write_text(config_, "ListenAddress 127.0.0.1:" + std::to_string(port_) + "\nHostKey " +
                              keys.host_ed25519.string() + "\nHostKey " + keys.host_ecdsa.string() +
                              "\nAuthorizedKeysFile " + keys.authorized_keys.string() +
                              "\nPidFile none\nStrictModes no\nUsePAM no\n"
                              "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                              "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
                              "LogLevel VERBOSE\n" +
                              extra_config + "\n");
      pid_ = spawn({"/usr/sbin/sshd", "-D", "-e", "-f", config_.string()}, log_);
      const std::string ready = "Server listening on 127.0.0.1 port " + std::to_string(port_);
      bool exited = false;
      const bool up = wait_for(
          [&] {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) exited = true;
            return exited || read_text(log_).find(ready) != std::string::npos;
          },
          10s);
      if (up && !exited) return;
      if (!exited) stop();
      pid_ = -1;
      if (read_text(log_).find("Address already in use") == std::string::npos)
        throw std::runtime_error("sshd did not start:\n" + read_text(log_));
    }
    throw std::runtime_error("sshd found no free port");
  }
  ~sshd() { stop(); }
  sshd(const sshd&) = delete;
  sshd& operator=(const sshd&) = delete;

  std::uint16_t port() const { return port_; }
  std::string log() const { return read_text(log_); }

  // Ends every client connection (the per-connection sshd processes) but keeps listening.
  void drop_connections() { kill_descendants(pid_, SIGKILL); }

  void stop() {
    if (pid_ <= 0) return;
    kill_descendants(pid_, SIGTERM);
    ::kill(pid_, SIGTERM);
    int status = 0;
    if (!wait_for([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 5s)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

  // A known_hosts line for this server with the given host key.
  std::string known_hosts_line(const fs::path& host_key) const {
    return "[127.0.0.1]:" + std::to_string(port_) + " " + ssh_keys::public_key(host_key) + "\n";
  }

 private:
  temp_dir dir_;
  fs::path config_, log_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

// An ssh-agent holding one key, on a socket of its own.
class ssh_agent {
 public:
  explicit ssh_agent(const fs::path& key) {
    socket_ = dir_.path() / "agent.sock";
    pid_ = spawn({"ssh-agent", "-D", "-a", socket_.string()}, dir_.path() / "agent.log");
    if (!wait_for([&] { return fs::exists(socket_); }, 10s))
      throw std::runtime_error("ssh-agent did not start");
    if (run({"ssh-add", key.string()}, nullptr, {"SSH_AUTH_SOCK=" + socket_.string()}) != 0)
      throw std::runtime_error("ssh-add failed");
  }
  ~ssh_agent() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  ssh_agent(const ssh_agent&) = delete;
  ssh_agent& operator=(const ssh_agent&) = delete;
  const fs::path& socket() const { return socket_; }

 private:
  temp_dir dir_;
  fs::path socket_;
  pid_t pid_ = -1;
};

// Sets an environment variable for the life of the object.
class scoped_env {
 public:
  scoped_env(const char* name, const std::string* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value)
      ::setenv(name, value->c_str(), 1);
    else
      ::unsetenv(name);
  }
  ~scoped_env() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// A TCP echo server on 127.0.0.1 ("the device"): echoes until EOF, then half-closes back.
class echo_server {
 public:
  explicit echo_server(asio::io_context& io)
      : acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io, accept_loop(), asio::detached);
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int eofs_seen = 0;

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, s] = co_await acceptor_.async_accept(use_tuple);
      if (ec) co_return;
      asio::co_spawn(acceptor_.get_executor(), echo(std::move(s)), asio::detached);
    }
  }
  asio::awaitable<void> echo(asio::ip::tcp::socket s) {
    std::vector<char> buf(64 * 1024);
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      if (ec == asio::error::eof) {
        ++eofs_seen;
        s.shutdown(asio::socket_base::shutdown_send, ec);
        co_return;
      }
      if (ec) co_return;
      auto [wec, m] = co_await asio::async_write(s, asio::buffer(buf.data(), n), use_tuple);
      if (wec) co_return;
    }
  }
  asio::ip::tcp::acceptor acceptor_;
};

// A device that sends a greeting, closes its write side at once, then counts what it reads.
class half_closing_server {
 public:
  explicit half_closing_server(asio::io_context& io, std::string greeting)
      : acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}), greeting_(std::move(greeting)) {
    asio::co_spawn(io, serve(), asio::detached);
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::size_t received = 0;
  bool saw_eof = false;

 private:
  asio::awaitable<void> serve() {
    auto [ec, s] = co_await acceptor_.async_accept(use_tuple);
    if (ec) co_return;
    auto [wec, m] = co_await asio::async_write(s, asio::buffer(greeting_), use_tuple);
    if (wec) co_return;
    s.shutdown(asio::socket_base::shutdown_send, wec);
    std::vector<char> buf(64 * 1024);
    for (;;) {
      auto [rec, n] = co_await s.async_read_some(asio::buffer(buf), use_tuple);
      received += n;
      if (rec == asio::error::eof) saw_eof = true;
      if (rec) co_return;
    }
  }
  asio::ip::tcp::acceptor acceptor_;
  std::string greeting_;
};

}  // namespace tether::test
