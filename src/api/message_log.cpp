#include "tether/api/message_log.hpp"

#include <sqlite3.h>

#include <stdexcept>

namespace tether::api {
namespace {

// Inside this file a failed SQLite call throws; every public call turns that into an error
// value at its edge.
struct sqlite_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(sqlite3* db, int rc, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
    throw sqlite_failure(std::string(what) + ": " + sqlite3_errmsg(db));
}

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    std::string m = message ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    throw sqlite_failure(m);
  }
}

class statement {
 public:
  statement(sqlite3* db, const char* sql) : db_(db) {
    check(db, sqlite3_prepare_v2(db, sql, -1, &s_, nullptr), "prepare");
  }
  ~statement() { sqlite3_finalize(s_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  statement& bind(int i, std::int64_t v) {
    check(db_, sqlite3_bind_int64(s_, i, v), "bind");
    return *this;
  }
  statement& bind(int i, const std::string& v) {
    check(db_, sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT),
          "bind");
    return *this;
  }
  statement& bind_blob(int i, const void* p, std::size_t n) {
    check(db_, sqlite3_bind_blob(s_, i, p ? p : "", static_cast<int>(n), SQLITE_TRANSIENT),
          "bind");
    return *this;
  }
  /// True while there is a row.
  bool step() {
    const int rc = sqlite3_step(s_);
    check(db_, rc, "step");
    return rc == SQLITE_ROW;
  }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(s_, col); }
  std::string text(int col) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A transaction that rolls back unless committed.
class transaction {
 public:
  explicit transaction(sqlite3* db) : db_(db) { exec(db_, "BEGIN IMMEDIATE"); }
  ~transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, "COMMIT");
    done_ = true;
  }

 private:
  sqlite3* db_;
  bool done_ = false;
};

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS messages(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  created_ms INTEGER NOT NULL,
  device TEXT NOT NULL,
  port INTEGER NOT NULL,
  protocol TEXT NOT NULL,
  direction TEXT NOT NULL,
  reply_to INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT '',
  sender TEXT NOT NULL DEFAULT '',
  data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_device ON messages(device, id);
CREATE TABLE IF NOT EXISTS topics(
  topic TEXT NOT NULL,
  message_id INTEGER NOT NULL,
  PRIMARY KEY(topic, message_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS topics_by_message ON topics(message_id);
CREATE TABLE IF NOT EXISTS webhooks(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  device TEXT NOT NULL,
  port INTEGER NOT NULL,
  protocol TEXT NOT NULL,
  token_sha256 BLOB NOT NULL UNIQUE,
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0);
)sql";

template <class F>
auto guarded(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return error{std::string("message log: ") + e.what(), errc::internal};
  }
}

stored_webhook webhook_row(const statement& s) {
  stored_webhook w;
  w.id = s.integer(0);
  w.device = s.text(1);
  w.port = static_cast<std::uint16_t>(s.integer(2));
  w.protocol = s.text(3);
  w.created_by = s.text(4);
  w.created_ms = s.integer(5);
  return w;
}

}  // namespace

message_log::message_log(const std::filesystem::path& file, retention keep)
    : file_(file.string()), keep_(keep) {
  try {
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(file_.c_str(), &db_, flags, nullptr) != SQLITE_OK)
      throw sqlite_failure(db_ ? sqlite3_errmsg(db_) : "out of memory");
    // WAL: a commit appends to the log file and syncs it, readers never block the writer.
    // synchronous=FULL: a stored message survives a power loss, not only a killed server.
    exec(db_, "PRAGMA journal_mode=WAL");
    exec(db_, "PRAGMA synchronous=FULL");
    exec(db_, "PRAGMA foreign_keys=OFF");
    sqlite3_busy_timeout(db_, 5000);  // another process reading the log (a backup)
    exec(db_, schema);
    apply_retention();
  } catch (const std::exception& e) {
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("message log " + file_ + ": " + e.what());
  }
}

message_log::~message_log() {
  if (db_) sqlite3_close(db_);
}

std::int64_t message_log::last_id() const {
  statement s(db_, "SELECT COALESCE(MAX(id), 0) FROM messages");
  s.step();
  return s.integer(0);
}

result<std::vector<stored_message>> message_log::store(stored_message message,
                                                       std::vector<stored_message> replies) {
  return guarded([&]() -> result<std::vector<stored_message>> {
    std::vector<stored_message> rows;
    rows.reserve(1 + replies.size());
    transaction tx(db_);
    statement insert(db_,
                     "INSERT INTO messages(created_ms, device, port, protocol, direction, "
                     "reply_to, status, sender, data) VALUES(?,?,?,?,?,?,?,?,?)");
    statement tag(db_, "INSERT OR IGNORE INTO topics(topic, message_id) VALUES(?,?)");
    const auto created = now_ms();
    auto put = [&](stored_message m) {
      m.created_ms = created;
      insert.bind(1, m.created_ms)
          .bind(2, m.device)
          .bind(3, m.port)
          .bind(4, m.protocol)
          .bind(5, m.direction)
          .bind(6, m.reply_to)
          .bind(7, m.status)
          .bind(8, m.sender)
          .bind_blob(9, m.data.data(), m.data.size());
      insert.step();
      insert.reset();
      m.id = sqlite3_last_insert_rowid(db_);
      m.topics.insert(m.topics.begin(), "_DEVICE_" + m.device + "_");
      if (m.direction == "from_device") m.topics.insert(m.topics.begin() + 1, "_API_RESP_");
      for (const auto& t : m.topics) {
        tag.bind(1, t).bind(2, m.id);
        tag.step();
        tag.reset();
      }
      rows.push_back(std::move(m));
    };
    put(std::move(message));
    for (auto& r : replies) {
      r.reply_to = rows.front().id;
      put(std::move(r));
    }
    tx.commit();
    if (++stores_since_retention_ >= 1000) apply_retention();
    return rows;
  });
}

result<std::vector<stored_message>> message_log::find(const message_query& q) const {
  return guarded([&]() -> result<std::vector<stored_message>> {
    const std::string sql =
        std::string("SELECT id, created_ms, device, port, protocol, direction, reply_to, status, "
                    "sender, data FROM messages m WHERE id > ?1 AND (?2 = '' OR device = ?2) AND "
                    "(?3 = '' OR EXISTS(SELECT 1 FROM topics t WHERE t.topic = ?3 AND "
                    "t.message_id = m.id)) ORDER BY id ") +
        (q.newest_first ? "DESC" : "") + " LIMIT ?4";
    statement s(db_, sql.c_str());
    s.bind(1, q.since).bind(2, q.device).bind(3, q.topic).bind(4, static_cast<std::int64_t>(q.limit));
    statement topics(db_, "SELECT topic FROM topics WHERE message_id = ?");
    std::vector<stored_message> out;
    std::size_t bytes = 0;
    while ((q.max_bytes == 0 || bytes < q.max_bytes) && s.step()) {
      stored_message m;
      m.id = s.integer(0);
      m.created_ms = s.integer(1);
      m.device = s.text(2);
      m.port = static_cast<std::uint16_t>(s.integer(3));
      m.protocol = s.text(4);
      m.direction = s.text(5);
      m.reply_to = s.integer(6);
      m.status = s.text(7);
      m.sender = s.text(8);
      m.data = s.text(9);
      bytes += m.data.size();
      out.push_back(std::move(m));
    }
    for (auto& m : out) {
      topics.bind(1, m.id);
      while (topics.step()) m.topics.push_back(topics.text(0));
      topics.reset();
    }
    return out;
  });
}

result<stored_webhook> message_log::add_webhook(stored_webhook hook,
                                                const server::sha256_digest& token_hash) {
  return guarded([&]() -> result<stored_webhook> {
    statement s(db_,
                "INSERT INTO webhooks(device, port, protocol, token_sha256, created_by, "
                "created_ms) VALUES(?,?,?,?,?,?)");
    hook.created_ms = now_ms();
    s.bind(1, hook.device)
        .bind(2, hook.port)
        .bind(3, hook.protocol)
        .bind_blob(4, token_hash.data(), token_hash.size())
        .bind(5, hook.created_by)
        .bind(6, hook.created_ms);
    s.step();
    hook.id = sqlite3_last_insert_rowid(db_);
    return hook;
  });
}

result<std::vector<stored_webhook>> message_log::webhooks(const std::string& device) const {
  return guarded([&]() -> result<std::vector<stored_webhook>> {
    statement s(db_,
                "SELECT id, device, port, protocol, created_by, created_ms FROM webhooks "
                "WHERE device = ? AND revoked = 0 ORDER BY id");
    s.bind(1, device);
    std::vector<stored_webhook> out;
    while (s.step()) out.push_back(webhook_row(s));
    return out;
  });
}

std::optional<stored_webhook> message_log::webhook_by_token(
    const server::sha256_digest& token_hash) const {
  try {
    statement s(db_,
                "SELECT id, device, port, protocol, created_by, created_ms FROM webhooks "
                "WHERE token_sha256 = ? AND revoked = 0");
    s.bind_blob(1, token_hash.data(), token_hash.size());
    if (s.step()) return webhook_row(s);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

result<bool> message_log::revoke_webhook(const std::string& device, std::int64_t id) {
  return guarded([&]() -> result<bool> {
    statement s(db_, "UPDATE webhooks SET revoked = 1 WHERE id = ? AND device = ? AND revoked = 0");
    s.bind(1, id).bind(2, device);
    s.step();
    return sqlite3_changes(db_) > 0;
  });
}

// Deletes what is older than max_age, then the oldest past max_count. Ids grow with time,
// so both are a cut at one id.
void message_log::apply_retention() {
  stores_since_retention_ = 0;
  const auto oldest_kept_ms =
      now_ms() - std::chrono::duration_cast<std::chrono::milliseconds>(keep_.max_age).count();
  statement by_age(db_, "SELECT COALESCE(MAX(id), 0) FROM messages WHERE created_ms < ?");
  by_age.bind(1, oldest_kept_ms);
  by_age.step();
  std::int64_t cut = by_age.integer(0);
  statement by_count(db_, "SELECT id FROM messages ORDER BY id DESC LIMIT 1 OFFSET ?");
  by_count.bind(1, static_cast<std::int64_t>(keep_.max_count));
  if (by_count.step()) cut = std::max(cut, by_count.integer(0));
  if (cut == 0) return;
  transaction tx(db_);
  statement rows(db_, "DELETE FROM messages WHERE id <= ?");
  rows.bind(1, cut);
  rows.step();
  statement tags(db_, "DELETE FROM topics WHERE message_id <= ?");
  tags.bind(1, cut);
  tags.step();
  tx.commit();
}

}  // namespace tether::api
