#pragma once
// The message log: every API message sent to a device and every reply it sent back, with
// their topics, in SQLite (WAL mode) in the server's state directory. A message is stored
// together with its replies in one transaction that is on disk before the API answers.
//
// Threads: one owner (the API's worker); not thread-safe. Calls block on the disk for a
// commit (a few hundred microseconds with WAL), which is why the API batches nothing and
// does no other work there.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tether/result.hpp"
#include "tether/server/token.hpp"

struct sqlite3;

namespace tether::api {

struct stored_message {
  std::int64_t id = 0;          // set by the log
  std::int64_t created_ms = 0;  // Unix time in ms; set by the log
  std::string device;
  std::uint16_t port = 0;
  std::string protocol;   // "tcp" or "udp"
  std::string direction;  // "to_device" (a message) or "from_device" (a reply)
  std::int64_t reply_to = 0;  // a reply: the id of its message
  std::string status;         // a message: what came of it (message_status words)
  std::string sender;         // the API key's name, or "webhook:ID"
  std::string data;           // the bytes
  std::vector<std::string> topics;
};

struct message_query {
  std::string device;      // empty: every device
  std::string topic;       // empty: every topic
  std::int64_t since = 0;  // ids above this one (the cursor)
  std::size_t limit = 100;
  bool newest_first = false;  // the newest `limit` rows after `since`, newest first
  // Fewer rows once their data reaches this many bytes (at least one row); 0: no bound. A
  // page of 1,000 messages of a MiB each must not be read, and held, whole.
  std::size_t max_bytes = 0;
};

struct stored_webhook {
  std::int64_t id = 0;
  std::string device;
  std::uint16_t port = 0;
  std::string protocol;
  std::string created_by;
  std::int64_t created_ms = 0;
};

struct retention {
  std::chrono::hours max_age{24 * 30};
  std::uint64_t max_count = 1'000'000;
};

class message_log {
 public:
  /// Opens or creates the log at `file`. Throws std::runtime_error naming the file.
  message_log(const std::filesystem::path& file, retention keep);
  ~message_log();
  message_log(const message_log&) = delete;
  message_log& operator=(const message_log&) = delete;

  /// Stores `message` and its `replies` (each its reply_to filled in) in one transaction,
  /// on disk when it returns. The caller's topics are kept; `_DEVICE_{id}_` is added to
  /// every row and `_API_RESP_` to replies. Returns the rows as stored, message first.
  result<std::vector<stored_message>> store(stored_message message,
                                            std::vector<stored_message> replies);

  /// Rows with id > since, oldest first, at most `limit`.
  result<std::vector<stored_message>> find(const message_query& q) const;

  /// The highest id stored so far (0 when empty).
  std::int64_t last_id() const;

  // Webhooks: the token's hash is stored, never the token.
  result<stored_webhook> add_webhook(stored_webhook hook, const server::sha256_digest& token_hash);
  result<std::vector<stored_webhook>> webhooks(const std::string& device) const;
  /// The live webhook with this token hash, if any.
  std::optional<stored_webhook> webhook_by_token(const server::sha256_digest& token_hash) const;
  /// Revokes one of `device`'s webhooks; false when there was none with that id.
  result<bool> revoke_webhook(const std::string& device, std::int64_t id);

 private:
  void apply_retention();

  sqlite3* db_ = nullptr;
  std::string file_;
  retention keep_;
  std::uint64_t stores_since_retention_ = 0;
};

}  // namespace tether::api
