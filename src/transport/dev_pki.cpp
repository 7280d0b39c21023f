// The development PKI, built with OpenSSL's C API (no openssl(1) needed at run time).

#include "tether/transport/dev_pki.hpp"
#include "tether/transport/private_dir.hpp"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

namespace tether::transport {
namespace {

namespace fs = std::filesystem;

constexpr long ca_days = 3650;
constexpr long server_days = 825;
constexpr long renew_before_days = 30;
constexpr long seconds_per_day = 24 * 60 * 60;

template <class T, void (*F)(T*)>
struct deleter {
  void operator()(T* p) const noexcept { F(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, deleter<BIO, BIO_free_all>>;
using bn_ptr = std::unique_ptr<BIGNUM, deleter<BIGNUM, BN_free>>;
using names_ptr = std::unique_ptr<GENERAL_NAMES, deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;

std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  const char* r = ERR_reason_error_string(e);
  return r != nullptr ? r : "OpenSSL error " + std::to_string(e);
}

// "dev PKI: cannot write 'dir/ca.key': Permission denied"
[[noreturn]] void fail(const fs::path& file, const std::string& what, const std::string& why) {
  throw std::runtime_error("dev PKI: " + what + " '" + file.string() + "': " + why);
}

// Serialises concurrent ensure_dev_pki calls (parallel test processes) on one directory.
class dir_lock {
 public:
  explicit dir_lock(const fs::path& dir) {
    const fs::path file = dir / ".lock";
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) fail(file, "cannot open lock file", std::strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        const int err = errno;
        ::close(fd_);
        fail(file, "cannot lock", std::strerror(err));
      }
    }
  }
  ~dir_lock() { ::close(fd_); }  // closing releases the lock
  dir_lock(const dir_lock&) = delete;
  dir_lock& operator=(const dir_lock&) = delete;

 private:
  int fd_ = -1;
};

// Writes through a temporary file and a rename, so a reader never sees half a file.
void write_file(const fs::path& file, const std::string& data, mode_t mode) {
  const fs::path tmp = file.string() + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // a leftover of a crash; never followed, if a link
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) fail(file, "cannot write", std::strerror(errno));
  ::fchmod(fd, mode);  // open's mode is filtered by the umask
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(file, "cannot write", std::strerror(err));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(file, "cannot write", std::strerror(err));
  }
}

template <class WriteFn>
std::string to_pem(WriteFn write, const fs::path& file) {
  bio_ptr mem(BIO_new(BIO_s_mem()));
  if (!mem || write(mem.get()) != 1) fail(file, "cannot encode", openssl_reason());
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

void save_key(const fs::path& file, EVP_PKEY* key) {
  write_file(file,
             to_pem(
                 [&](BIO* b) {
                   return PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
                 },
                 file),
             0600);
}

void save_cert(const fs::path& file, X509* cert) {
  write_file(file, to_pem([&](BIO* b) { return PEM_write_bio_X509(b, cert); }, file), 0644);
}

x509_ptr load_cert(const fs::path& file) {
  bio_ptr in(BIO_new_file(file.c_str(), "r"));
  if (!in) fail(file, "cannot read", openssl_reason());
  x509_ptr cert(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr));
  if (!cert) fail(file, "cannot parse certificate", openssl_reason());
  return cert;
}

pkey_ptr load_key(const fs::path& file) {
  bio_ptr in(BIO_new_file(file.c_str(), "r"));
  if (!in) fail(file, "cannot read", openssl_reason());
  pkey_ptr key(PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr));
  if (!key) fail(file, "cannot parse private key", openssl_reason());
  return key;
}

pkey_ptr new_key(const fs::path& file) {
  pkey_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail(file, "cannot generate an EC P-256 key for", openssl_reason());
  return key;
}

bool is_ip(const std::string& name) {
  ASN1_OCTET_STRING* ip = a2i_IPADDRESS(name.c_str());
  ASN1_OCTET_STRING_free(ip);
  return ip != nullptr;
}

void validate_name(const std::string& name) {
  if (is_ip(name)) return;
  const bool ok = !name.empty() && name.size() <= 253 &&
                  std::all_of(name.begin(), name.end(), [](unsigned char ch) {
                    return std::isalnum(ch) || ch == '.' || ch == '-' || ch == '_' || ch == '*';
                  });
  if (!ok) throw std::invalid_argument("dev PKI: '" + name + "' is neither a host name nor an IP");
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value, const fs::path& file) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  const bool ok = ext != nullptr && X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  if (!ok) fail(file, "cannot build certificate", openssl_reason());
}

void add_san(X509* cert, const std::vector<std::string>& names, const fs::path& file) {
  names_ptr san(sk_GENERAL_NAME_new_null());
  for (const auto& n : names) {
    GENERAL_NAME* gn = GENERAL_NAME_new();
    if (ASN1_OCTET_STRING* ip = a2i_IPADDRESS(n.c_str())) {
      GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    } else {
      ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
      ASN1_STRING_set(dns, n.data(), static_cast<int>(n.size()));
      GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
    }
    sk_GENERAL_NAME_push(san.get(), gn);
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, san.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    fail(file, "cannot build certificate", openssl_reason());
  }
}

// A v3 certificate for `key`, named `cn`, valid from an hour ago for `days`, with a random
// serial. Extensions and the signature are added by the caller.
x509_ptr new_cert(EVP_PKEY* key, const std::string& cn, long days, const fs::path& file) {
  x509_ptr cert(X509_new());
  bn_ptr serial(BN_new());
  X509_NAME* subject = cert ? X509_get_subject_name(cert.get()) : nullptr;
  const bool ok =
      cert && serial && X509_set_version(cert.get(), X509_VERSION_3) == 1 &&
      BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) != nullptr &&
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr &&
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * seconds_per_day) != nullptr &&
      X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("tether development"), -1,
                                 -1, 0) == 1 &&
      X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) == 1 &&
      X509_set_pubkey(cert.get(), key) == 1;
  if (!ok) fail(file, "cannot build certificate", openssl_reason());
  return cert;
}

void sign(X509* cert, EVP_PKEY* issuer_key, const fs::path& file) {
  if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
    fail(file, "cannot sign certificate", openssl_reason());
  }
}

struct ca {
  x509_ptr cert;
  pkey_ptr key;
};

ca make_ca(const dev_pki& pki, const fs::path& ca_key_file) {
  ca c;
  c.key = new_key(ca_key_file);
  c.cert = new_cert(c.key.get(), "tether development CA", ca_days, pki.ca_cert);
  X509_set_issuer_name(c.cert.get(), X509_get_subject_name(c.cert.get()));
  add_ext(c.cert.get(), c.cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0",
          pki.ca_cert);
  add_ext(c.cert.get(), c.cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign", pki.ca_cert);
  add_ext(c.cert.get(), c.cert.get(), NID_subject_key_identifier, "hash", pki.ca_cert);
  add_ext(c.cert.get(), c.cert.get(), NID_authority_key_identifier, "keyid:always", pki.ca_cert);
  sign(c.cert.get(), c.key.get(), pki.ca_cert);
  save_key(ca_key_file, c.key.get());
  save_cert(pki.ca_cert, c.cert.get());
  return c;
}

ca load_ca(const dev_pki& pki, const fs::path& ca_key_file) {
  ca c{load_cert(pki.ca_cert), load_key(ca_key_file)};
  if (X509_check_private_key(c.cert.get(), c.key.get()) != 1) {
    ERR_clear_error();
    fail(ca_key_file, "cannot use", "it does not match '" + pki.ca_cert.string() + "'");
  }
  return c;
}

void issue_server(const dev_pki& pki, const ca& issuer, const std::vector<std::string>& names) {
  pkey_ptr key = new_key(pki.server_key);
  x509_ptr cert = new_cert(key.get(), names.front(), server_days, pki.server_cert);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer.cert.get()));
  add_ext(cert.get(), issuer.cert.get(), NID_basic_constraints, "critical,CA:FALSE",
          pki.server_cert);
  add_ext(cert.get(), issuer.cert.get(), NID_key_usage, "critical,digitalSignature",
          pki.server_cert);
  add_ext(cert.get(), issuer.cert.get(), NID_ext_key_usage, "serverAuth", pki.server_cert);
  add_ext(cert.get(), issuer.cert.get(), NID_subject_key_identifier, "hash", pki.server_cert);
  add_ext(cert.get(), issuer.cert.get(), NID_authority_key_identifier, "keyid:always",
          pki.server_cert);
  add_san(cert.get(), names, pki.server_cert);
  sign(cert.get(), issuer.key.get(), pki.server_cert);
  save_key(pki.server_key, key.get());  // key first: a cert without its key is never reused
  save_cert(pki.server_cert, cert.get());
}

// Whether the existing server certificate can stay: parseable, matching its key, signed by
// the CA, valid for a while yet and naming every host.
bool server_reusable(const dev_pki& pki, const ca& issuer, const std::vector<std::string>& names) {
  std::error_code ec;
  if (!fs::exists(pki.server_cert, ec) || !fs::exists(pki.server_key, ec)) return false;
  x509_ptr cert;
  pkey_ptr key;
  try {
    cert = load_cert(pki.server_cert);
    key = load_key(pki.server_key);
  } catch (const std::runtime_error&) {
    return false;  // ours to replace: the server pair is derived data
  }
  bool ok = X509_check_private_key(cert.get(), key.get()) == 1 &&
            X509_verify(cert.get(), X509_get0_pubkey(issuer.cert.get())) == 1;
  time_t soon = time(nullptr) + renew_before_days * seconds_per_day;
  ok = ok && X509_cmp_time(X509_get0_notAfter(cert.get()), &soon) > 0;
  for (const auto& n : names) {
    if (!ok) break;
    ok = is_ip(n) ? X509_check_ip_asc(cert.get(), n.c_str(), 0) == 1
                  : X509_check_host(cert.get(), n.c_str(), n.size(), 0, nullptr) == 1;
  }
  ERR_clear_error();
  return ok;
}

}  // namespace

dev_pki ensure_dev_pki(const fs::path& dir, const std::vector<std::string>& extra_names) {
  std::vector<std::string> names{"localhost", "127.0.0.1", "::1"};
  for (const auto& n : extra_names) {
    validate_name(n);
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  }
  ensure_private_dir(dir);
  check_private_file(dir / ".lock", false);
  dir_lock lock(dir);

  const dev_pki pki{dir / "ca.pem", dir / "server.pem", dir / "server.key"};
  const fs::path ca_key = dir / "ca.key";
  // Files that are links or readable by others are refused before anything reads them.
  const bool have_ca_cert = check_private_file(pki.ca_cert, false);
  const bool have_ca_key = check_private_file(ca_key, true);
  const bool have_ca = have_ca_cert && have_ca_key;
  check_private_file(pki.server_cert, false);
  check_private_file(pki.server_key, true);
  const ca issuer = have_ca ? load_ca(pki, ca_key) : make_ca(pki, ca_key);
  if (!have_ca || !server_reusable(pki, issuer, names)) issue_server(pki, issuer, names);
  return pki;
}

}  // namespace tether::transport
