#include "tether/api/message_log.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace tether::api {
namespace {

namespace fs = std::filesystem;

class MessageLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tether-log-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static stored_message message(std::string device, std::string data) {
    stored_message m;
    m.device = std::move(device);
    m.port = 9876;
    m.protocol = "tcp";
    m.direction = "to_device";
    m.status = "delivered";
    m.sender = "ops";
    m.data = std::move(data);
    return m;
  }
  static stored_message reply(std::string data) {
    auto r = message("", std::move(data));
    r.direction = "from_device";
    r.status.clear();
    return r;
  }

  fs::path dir_;
};

TEST_F(MessageLogTest, StoresAMessageWithItsRepliesAndTopics) {
  message_log log(dir_ / "m.db", {});
  auto m = message("dev-1", std::string("bin\0ary", 7));
  m.topics = {"t"};
  auto r = reply("pong");
  r.device = "dev-1";
  auto rows = log.store(m, {r});
  ASSERT_TRUE(rows) << rows.message();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1].reply_to, (*rows)[0].id);
  auto found = log.find({});
  ASSERT_TRUE(found);
  ASSERT_EQ(found->size(), 2u);
  EXPECT_EQ((*found)[0].data, std::string("bin\0ary", 7));
  EXPECT_EQ((*found)[1].data, "pong");
  auto replies = log.find({.topic = "_API_RESP_"});
  ASSERT_EQ(replies->size(), 1u);
  EXPECT_EQ((*replies)[0].id, (*rows)[1].id);
  EXPECT_EQ(log.find({.topic = "t"})->size(), 1u);  // the caller gives replies their topics
  EXPECT_EQ(log.find({.device = "dev-2"})->size(), 0u);
}

TEST_F(MessageLogTest, PagesWithTheCursorAndSurvivesReopening) {
  {
    message_log log(dir_ / "m.db", {});
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(log.store(message("dev-1", std::to_string(i)), {}));
  }
  message_log log(dir_ / "m.db", {});
  std::vector<std::string> seen;
  std::int64_t since = 0;
  for (;;) {
    auto page = log.find({.since = since, .limit = 2});
    ASSERT_TRUE(page);
    if (page->empty()) break;
    for (const auto& m : *page) seen.push_back(m.data);
    since = page->back().id;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  EXPECT_EQ(log.last_id(), since);
}

TEST_F(MessageLogTest, NewestFirstGivesTheLastPageInReverse) {
  message_log log(dir_ / "m.db", {});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(log.store(message(i == 2 ? "dev-2" : "dev-1", std::to_string(i)), {}));
  auto page = log.find({.limit = 3, .newest_first = true});
  ASSERT_TRUE(page);
  std::vector<std::string> seen;
  for (const auto& m : *page) seen.push_back(m.data);
  EXPECT_EQ(seen, (std::vector<std::string>{"4", "3", "2"}));
  auto dev1 = log.find({.device = "dev-1", .since = 1, .limit = 10, .newest_first = true});
  ASSERT_TRUE(dev1);
  seen.clear();
  for (const auto& m : *dev1) seen.push_back(m.data);
  EXPECT_EQ(seen, (std::vector<std::string>{"4", "3", "1"}));  // ids above 1, dev-1 only
}

TEST_F(MessageLogTest, APageEndsOnceItsDataReachesMaxBytes) {
  message_log log(dir_ / "m.db", {});
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(log.store(message("dev-1", std::string(1000, static_cast<char>('a' + i))), {}));
  // 2,500 bytes: the row that reaches them is the last; the cursor carries on from it.
  auto page = log.find({.limit = 10, .max_bytes = 2500});
  ASSERT_TRUE(page);
  ASSERT_EQ(page->size(), 3u);
  auto rest = log.find({.since = page->back().id, .limit = 10, .max_bytes = 2500});
  ASSERT_TRUE(rest);
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ(rest->front().data, std::string(1000, 'd'));
  // A row larger than the bound still comes, alone.
  auto one = log.find({.limit = 10, .max_bytes = 10});
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1u);
}

TEST_F(MessageLogTest, RetentionKeepsTheNewestByCount) {
  {
    message_log log(dir_ / "m.db", {.max_count = 3});
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(log.store(message("dev-1", std::to_string(i)), {}));
  }
  message_log log(dir_ / "m.db", {.max_count = 3});  // retention applies at opening
  auto all = log.find({});
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->front().data, "3");
}

TEST_F(MessageLogTest, WebhooksAreFoundByTokenHashUntilRevoked) {
  message_log log(dir_ / "m.db", {});
  server::sha256_digest hash{};
  hash[0] = 1;
  stored_webhook w;
  w.device = "dev-1";
  w.port = 9876;
  w.protocol = "udp";
  w.created_by = "ops";
  auto added = log.add_webhook(w, hash);
  ASSERT_TRUE(added);
  ASSERT_TRUE(log.webhook_by_token(hash));
  EXPECT_EQ(log.webhook_by_token(hash)->protocol, "udp");
  EXPECT_EQ(log.webhooks("dev-1")->size(), 1u);
  EXPECT_FALSE(*log.revoke_webhook("dev-2", added->id));  // another device's id
  EXPECT_TRUE(*log.revoke_webhook("dev-1", added->id));
  EXPECT_FALSE(log.webhook_by_token(hash));
  EXPECT_TRUE(log.webhooks("dev-1")->empty());
}

}  // namespace
}  // namespace tether::api
