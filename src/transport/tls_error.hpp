#pragma once
// How OpenSSL failures become asio::error_code values (internal to the TLS transport).
// Three categories keep the user-facing message precise without branching on strings:
// certificate verification (value: X509_V_ERR_*), handshake failures and failures of an
// established session (value: OpenSSL's packed ERR code).

#include <asio/error_code.hpp>

namespace tether::transport::detail {

const std::error_category& tls_verify_category() noexcept;
const std::error_category& tls_handshake_category() noexcept;
const std::error_category& tls_session_category() noexcept;

// Reads and clears this thread's OpenSSL error queue after a failed call whose
// SSL_get_error() result was `ssl_error`. `verify_result` is SSL_get_verify_result() (client
// side), `io_error` the last socket error seen, if any. `in_handshake` picks the category.
asio::error_code make_tls_error(int ssl_error, long verify_result, const asio::error_code& io_error,
                                bool in_handshake);

}  // namespace tether::transport::detail
