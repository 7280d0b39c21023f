// ensure_dev_pki: what it writes, with which modes, and when it reuses or re-issues.

#include "tether/transport/dev_pki.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

namespace tether::transport {
namespace {

namespace fs = std::filesystem;

struct pki_dir {
  pki_dir() {
    std::string tmpl = (fs::temp_directory_path() / "tether-pki-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~pki_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 07777;
}

struct x509_free_t {
  void operator()(X509* x) const { X509_free(x); }
};
using x509_ptr = std::unique_ptr<X509, x509_free_t>;

x509_ptr read_cert(const fs::path& p) {
  FILE* f = std::fopen(p.c_str(), "r");
  if (f == nullptr) return nullptr;
  x509_ptr x(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return x;
}

// Verifies `leaf` against `ca` for TLS server use, as a client would.
int verify_server(X509* leaf, X509* ca) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  const int ok = X509_verify_cert(ctx);
  const int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return err;
}

TEST(DevPki, CreatesAVerifiableP256ChainWithPrivateKeys) {
  pki_dir tmp;
  const fs::path dir = tmp.path / "nested" / "pki";
  const auto pki = ensure_dev_pki(dir, {"tunnel.example.test", "10.1.2.3"});

  EXPECT_EQ(pki.ca_cert, dir / "ca.pem");
  EXPECT_EQ(pki.server_cert, dir / "server.pem");
  EXPECT_EQ(pki.server_key, dir / "server.key");
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(pki.server_key), 0600u);
  EXPECT_EQ(mode_of(dir / "ca.key"), 0600u);

  auto ca = read_cert(pki.ca_cert);
  auto leaf = read_cert(pki.server_cert);
  ASSERT_TRUE(ca);
  ASSERT_TRUE(leaf);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_EQ(X509_check_ca(leaf.get()), 0);
  EXPECT_EQ(verify_server(leaf.get(), ca.get()), X509_V_OK);

  for (const char* host : {"localhost", "tunnel.example.test"}) {
    EXPECT_EQ(X509_check_host(leaf.get(), host, 0, 0, nullptr), 1) << host;
  }
  for (const char* ip : {"127.0.0.1", "::1", "10.1.2.3"}) {
    EXPECT_EQ(X509_check_ip_asc(leaf.get(), ip, 0), 1) << ip;
  }
  EXPECT_NE(X509_check_host(leaf.get(), "example.invalid", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_ip_asc(leaf.get(), "127.0.0.2", 0), 1);

  // EC P-256 keys, and the server key is the one in the certificate.
  FILE* f = std::fopen(pki.server_key.c_str(), "r");
  ASSERT_NE(f, nullptr);
  EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  ASSERT_NE(key, nullptr);
  char group[64] = {};
  EXPECT_EQ(EVP_PKEY_get_group_name(key, group, sizeof group, nullptr), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_check_private_key(leaf.get(), key), 1);
  EVP_PKEY_free(key);
  EXPECT_STREQ(OBJ_nid2sn(EVP_PKEY_get_base_id(X509_get0_pubkey(ca.get()))), "id-ecPublicKey");
}

TEST(DevPki, ReusesExistingFiles) {
  pki_dir tmp;
  const auto first = ensure_dev_pki(tmp.path);
  const std::string ca = slurp(first.ca_cert);
  const std::string cert = slurp(first.server_cert);
  const std::string key = slurp(first.server_key);

  const auto second = ensure_dev_pki(tmp.path);
  EXPECT_EQ(slurp(second.ca_cert), ca);
  EXPECT_EQ(slurp(second.server_cert), cert);
  EXPECT_EQ(slurp(second.server_key), key);
}

TEST(DevPki, ReissuesTheServerCertificateForNewNamesButKeepsTheCa) {
  pki_dir tmp;
  const auto first = ensure_dev_pki(tmp.path);
  const std::string ca = slurp(first.ca_cert);
  const std::string cert = slurp(first.server_cert);

  const auto second = ensure_dev_pki(tmp.path, {"device-gw.test"});
  EXPECT_EQ(slurp(second.ca_cert), ca);
  EXPECT_NE(slurp(second.server_cert), cert);
  auto leaf = read_cert(second.server_cert);
  auto ca_cert = read_cert(second.ca_cert);
  ASSERT_TRUE(leaf);
  EXPECT_EQ(X509_check_host(leaf.get(), "device-gw.test", 0, 0, nullptr), 1);
  EXPECT_EQ(verify_server(leaf.get(), ca_cert.get()), X509_V_OK);
}

TEST(DevPki, ReissuesADamagedServerCertificate) {
  pki_dir tmp;
  const auto first = ensure_dev_pki(tmp.path);
  std::ofstream(first.server_cert, std::ios::trunc) << "not a certificate\n";
  const auto second = ensure_dev_pki(tmp.path);
  auto leaf = read_cert(second.server_cert);
  auto ca = read_cert(second.ca_cert);
  ASSERT_TRUE(leaf);
  EXPECT_EQ(verify_server(leaf.get(), ca.get()), X509_V_OK);
}

TEST(DevPki, ADamagedCaIsAnErrorNamingTheFile) {
  pki_dir tmp;
  const auto first = ensure_dev_pki(tmp.path);
  std::ofstream(first.ca_cert, std::ios::trunc) << "garbage\n";
  try {
    ensure_dev_pki(tmp.path);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(first.ca_cert.string()), std::string::npos) << e.what();
  }
}

TEST(DevPki, ADirectoryThatIsAFileIsAnErrorNamingIt) {
  pki_dir tmp;
  const fs::path file = tmp.path / "file";
  std::ofstream(file) << "x";
  try {
    ensure_dev_pki(file);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
  }
}

TEST(DevPki, RejectsNamesThatAreNeitherHostsNorIps) {
  pki_dir tmp;
  EXPECT_THROW(ensure_dev_pki(tmp.path, {"bad name,DNS:evil"}), std::invalid_argument);
  EXPECT_THROW(ensure_dev_pki(tmp.path, {""}), std::invalid_argument);
}

}  // namespace
}  // namespace tether::transport
