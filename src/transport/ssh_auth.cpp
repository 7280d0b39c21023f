// Authentication of an SSH session: private key files, or the keys of a running ssh-agent.
// Failures say which keys the server refused and why, in words a user can act on.

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>

#include "tether/transport/ssh_session.hpp"
#include "tether/transport/ssh_util.hpp"

namespace tether::transport::detail {
namespace {

// What a key file says about itself without its passphrase: the public half of an OpenSSH
// format key is stored in clear; PEM files name their type in the armour.
struct key_info {
  std::string type;         // "ssh-ed25519", ..., or empty when unknown
  std::string fingerprint;  // SHA256:..., when the public key is known
  bool encrypted = false;
};

std::string read_small_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string text;
  if (!in) return text;
  text.resize(256 * 1024);  // no private key is that large
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(std::size_t(in.gcount()));
  return text;
}

void read_public_file(const std::filesystem::path& pub, key_info& info) {
  std::istringstream in(read_small_file(pub));
  std::string type, b64;
  if (!(in >> type >> b64)) return;
  if (auto blob = base64_decode(b64); blob && ssh_key_type_of_blob(*blob) == type) {
    info.type = type;
    info.fingerprint = ssh_fingerprint_sha256(*blob);
  }
}

key_info inspect_key_file(const std::filesystem::path& file) {
  key_info info;
  const auto text = read_small_file(file);
  constexpr std::string_view begin = "-----BEGIN OPENSSH PRIVATE KEY-----";
  constexpr std::string_view end = "-----END OPENSSH PRIVATE KEY-----";
  if (const auto b = text.find(begin); b != std::string::npos) {
    const auto e = text.find(end, b);
    std::string b64;
    for (const char c :
         text.substr(b + begin.size(), e == std::string::npos ? 0 : e - b - begin.size()))
      if (!std::isspace(static_cast<unsigned char>(c))) b64 += c;
    if (auto raw = base64_decode(b64)) {
      std::string_view in(*raw);
      constexpr std::string_view magic("openssh-key-v1\0", 15);
      if (in.starts_with(magic)) {
        in.remove_prefix(magic.size());
        const auto cipher = read_ssh_string(in);
        const auto kdf = read_ssh_string(in);
        const auto kdf_options = read_ssh_string(in);
        if (cipher && kdf && kdf_options && in.size() >= 4) {
          in.remove_prefix(4);  // number of keys: always 1
          if (const auto pub = read_ssh_string(in)) {
            info.type = ssh_key_type_of_blob(*pub);
            info.fingerprint = ssh_fingerprint_sha256(*pub);
          }
          info.encrypted = *cipher != "none";
        }
      }
    }
  } else {
    if (text.find("BEGIN RSA PRIVATE KEY") != std::string::npos) info.type = "ssh-rsa";
    if (text.find("BEGIN EC PRIVATE KEY") != std::string::npos) info.type = "ecdsa-sha2-nistp256";
    if (text.find("BEGIN DSA PRIVATE KEY") != std::string::npos) info.type = "ssh-dss";
    info.encrypted = text.find("ENCRYPTED") != std::string::npos;
  }
  if (info.fingerprint.empty()) {
    auto pub = file;
    pub += ".pub";
    read_public_file(pub, info);
  }
  return info;
}

std::string describe_key(const std::string& name, const key_info& k) {
  if (k.type.empty()) return name;
  std::string d = name + " (" + ssh_key_display_name(k.type);
  if (!k.fingerprint.empty()) d += " " + k.fingerprint;
  return d + ")";
}

constexpr std::string_view rsa_hint =
    "RSA keys need rsa-sha2-256/512 signatures, which libssh2 1.10 cannot make (it signs RSA "
    "only with SHA-1 \"ssh-rsa\", which OpenSSH 8.8 and later refuse); use an Ed25519 key "
    "instead (ssh-keygen -t ed25519) and add its .pub to the server's authorized_keys";

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

struct outcome {
  std::vector<std::string> refused;   // keys the server said no to
  std::vector<std::string> problems;  // keys we could not even offer
  bool rsa_refused = false;
};

std::string failure_text(const outcome& o) {
  std::vector<std::string> parts;
  if (!o.refused.empty())
    parts.push_back(std::string(o.refused.size() == 1 ? "the server refused key "
                                                      : "the server refused keys ") +
                    join(o.refused, ", "));
  for (const auto& p : o.problems) parts.push_back(p);
  if (o.rsa_refused) parts.emplace_back(rsa_hint);
  return join(parts, "; ");
}

}  // namespace

asio::awaitable<result<std::monostate>> ssh_core::authenticate() {
  const auto& user = opts_.user;
  const auto failed = [&user](const std::string& why) {
    return error{"authentication failed for user " + user + ": " + why, errc::bad_token};
  };
  const auto lost = [this, &failed](int rc) -> error {
    if (deadline_passed_ || rc == LIBSSH2_ERROR_TIMEOUT) return error{"timed out authenticating"};
    if (peer_eof_) {
      std::string m = "connection closed by the server";
      if (!server_disconnect_.empty()) m += " (" + server_disconnect_ + ")";
      return failed(m);
    }
    return failed(last_error_text());
  };

  // Which methods the server offers (and whether "none" already let us in).
  char* methods = nullptr;
  int rc = co_await drive([&] {
    methods = libssh2_userauth_list(s_, user.data(), unsigned(user.size()));
    return methods ? 0 : libssh2_session_last_errno(s_);
  });
  if (!methods) {
    if (libssh2_userauth_authenticated(s_)) co_return std::monostate{};
    co_return lost(rc);
  }
  const std::string offered = methods;
  if (offered.find("publickey") == std::string::npos)
    co_return failed("the server accepts only " + offered + "; tether authenticates with keys");

  outcome out;
  if (!opts_.identity_files.empty()) {
    std::optional<std::string> passphrase = opts_.passphrase;
    if (!passphrase)
      if (const char* env = std::getenv("TETHER_SSH_PASSPHRASE")) passphrase = env;
    for (const auto& file : opts_.identity_files) {
      const auto name = file.string();
      std::error_code ec;
      if (!std::filesystem::is_regular_file(file, ec)) {
        out.problems.push_back("identity file " + name + " does not exist");
        continue;
      }
      const auto info = inspect_key_file(file);
      if (info.encrypted && !passphrase) {
        out.problems.push_back("key " + name +
                               " is encrypted and no passphrase was given (--passphrase-file or "
                               "TETHER_SSH_PASSPHRASE)");
        continue;
      }
      rc = co_await drive([&] {
        return libssh2_userauth_publickey_fromfile_ex(s_, user.data(), unsigned(user.size()),
                                                      nullptr, name.c_str(),
                                                      passphrase ? passphrase->c_str() : "");
      });
      if (rc == 0) {
        spdlog::info("ssh {}: authenticated with key {}", where(), describe_key(name, info));
        co_return std::monostate{};
      }
      if (deadline_passed_ || is_fatal(rc) || rc == LIBSSH2_ERROR_TIMEOUT) co_return lost(rc);
      if (rc == LIBSSH2_ERROR_FILE) {
        out.problems.push_back(
            "cannot use key " + name + ": " +
            (info.encrypted ? "wrong passphrase? (" : "unreadable or unsupported key (") +
            last_error_text() + ")");
      } else if (rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED ||
                 rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED) {
        out.refused.push_back(describe_key(name, info));
        out.rsa_refused = out.rsa_refused || info.type == "ssh-rsa";
      } else {
        out.problems.push_back("key " + name + ": " + last_error_text());
      }
    }
    co_return failed(failure_text(out));
  }

  // No key files: the agent's keys.
  const char* agent_socket = std::getenv("SSH_AUTH_SOCK");
  if (!agent_socket || !*agent_socket)
    co_return failed(
        "no identity file given (-i) and no ssh-agent running (SSH_AUTH_SOCK is not set)");
  const auto free_agent = [](LIBSSH2_AGENT* a) {
    libssh2_agent_disconnect(a);
    libssh2_agent_free(a);
  };
  std::unique_ptr<LIBSSH2_AGENT, decltype(free_agent)> agent(libssh2_agent_init(s_), free_agent);
  if (!agent) co_return failed("cannot use the ssh-agent (out of memory)");
  // The agent is a local socket; libssh2 talks to it in blocking mode, which is quick.
  if (libssh2_agent_connect(agent.get()) != 0)
    co_return failed("cannot reach the ssh-agent at " + std::string(agent_socket) + ": " +
                     last_error_text());
  if (libssh2_agent_list_identities(agent.get()) != 0)
    co_return failed("cannot list the ssh-agent's keys: " + last_error_text());
  libssh2_agent_publickey* prev = nullptr;
  libssh2_agent_publickey* id = nullptr;
  bool any = false;
  while (libssh2_agent_get_identity(agent.get(), &id, prev) == 0) {
    prev = id;
    any = true;
    const std::string_view blob(reinterpret_cast<const char*>(id->blob), id->blob_len);
    key_info info{ssh_key_type_of_blob(blob), ssh_fingerprint_sha256(blob), false};
    const auto name = "agent key " + std::string(id->comment ? id->comment : "");
    rc = co_await drive([&] { return libssh2_agent_userauth(agent.get(), user.c_str(), id); });
    if (rc == 0) {
      spdlog::info("ssh {}: authenticated with {}", where(), describe_key(name, info));
      co_return std::monostate{};
    }
    if (deadline_passed_ || is_fatal(rc) || rc == LIBSSH2_ERROR_TIMEOUT) co_return lost(rc);
    out.refused.push_back(describe_key(name, info));
    out.rsa_refused = out.rsa_refused || info.type == "ssh-rsa";
  }
  if (!any) co_return failed("the ssh-agent holds no keys (add one with ssh-add, or pass -i)");
  co_return failed(failure_text(out));
}

}  // namespace tether::transport::detail

namespace tether::transport {

namespace {

// A public key as ssh-keygen writes it beside the private one ("ssh-ed25519 AAAA... comment"),
// or a public key in the PEM and RFC 4716 armours.
bool is_public_key_text(const std::string& text) {
  if (text.starts_with("-----BEGIN PUBLIC KEY-----") ||
      text.starts_with("---- BEGIN SSH2 PUBLIC KEY ----"))
    return true;
  std::istringstream in(text);
  std::string type, b64;
  if (!(in >> type >> b64)) return false;
  const auto blob = base64_decode(b64);
  return blob && !type.empty() && ssh_key_type_of_blob(*blob) == type;
}

}  // namespace

std::string identity_file_problem(const std::filesystem::path& file, std::string_view option) {
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (status.type() == std::filesystem::file_type::not_found) return "the file does not exist";
  if (ec) return "cannot be read: " + ec.message();
  if (std::filesystem::is_directory(status)) return "is a directory, not a private key file";
  if (!std::filesystem::is_regular_file(status)) return "is not a regular file";
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::string("cannot be read: ") + std::strerror(errno);
  std::string head(4096, '\0');  // a public key line is shorter; a private key starts so
  in.read(head.data(), std::streamsize(head.size()));
  head.resize(std::size_t(in.gcount()));
  if (!is_public_key_text(head)) return {};
  // ssh-keygen's pair: the private key is the same name without ".pub".
  std::string hint = "the private key";
  if (file.extension() == ".pub") {
    auto key = file;
    key.replace_extension();
    if (std::filesystem::is_regular_file(key, ec)) hint = "the private key, e.g. " + key.string();
  }
  return "is a public key; " + std::string(option) + " wants " + hint;
}

}  // namespace tether::transport
