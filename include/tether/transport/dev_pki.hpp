#pragma once
// A throwaway PKI for development and tests: one CA and one server certificate it signed,
// so `tether server` can start with TLS and clients can verify it without any setup.
// Never meant for production certificates.

#include <filesystem>
#include <string>
#include <vector>

namespace tether::transport {

struct dev_pki {
  std::filesystem::path ca_cert;      // PEM, give to clients as their CA file
  std::filesystem::path server_cert;  // PEM, leaf certificate
  std::filesystem::path server_key;   // PEM (PKCS#8), mode 0600
};

/// Creates, once, an EC P-256 CA (ca.pem, ca.key) and a server certificate (server.pem,
/// server.key) for localhost, 127.0.0.1 and ::1 plus `extra_names` (DNS names or IP
/// literals), signed by that CA, in `dir`. `dir` is created with mode 0700 if missing; keys
/// are written 0600. A `dir` or key open to group or others, or a symlink among the files,
/// is refused (see private_dir.hpp). Existing files are reused; the server certificate is re-issued when it
/// is missing, expires within 30 days, lacks one of the names or was not signed by the CA.
/// Safe against concurrent callers on the same directory (a lock file serialises them).
/// Throws std::runtime_error naming the file on failure, std::invalid_argument for an extra
/// name that is neither a host name nor an IP literal.
dev_pki ensure_dev_pki(const std::filesystem::path& dir,
                       const std::vector<std::string>& extra_names = {});

}  // namespace tether::transport
