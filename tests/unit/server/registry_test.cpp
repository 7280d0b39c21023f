#include "tether/server/registry.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace tether::server {
namespace {

TEST(Registry, FindsDevicesByExactId) {
  registry r({{"dev-42", "127.0.1.42"}, {"dev-43", "::1"}});
  EXPECT_EQ(r.size(), 2u);
  ASSERT_NE(r.find("dev-42"), nullptr);
  EXPECT_EQ(r.find("dev-42")->address, "127.0.1.42");
  EXPECT_EQ(r.find("dev-43")->address, "::1");
  EXPECT_EQ(r.find("dev-4"), nullptr);
  EXPECT_EQ(r.find("DEV-42"), nullptr);
  EXPECT_EQ(r.find(""), nullptr);
}

TEST(Registry, EmptyFindsNothing) {
  registry r;
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.find("dev-42"), nullptr);
}

TEST(Registry, RejectsDuplicateIds) {
  try {
    registry r({{"dev-42", "127.0.1.42"}, {"dev-42", "127.0.1.43"}});
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "duplicate device id 'dev-42'");
  }
}

TEST(DeviceId, Validation) {
  EXPECT_TRUE(is_valid_device_id("dev-42"));
  EXPECT_TRUE(is_valid_device_id("link12345"));
  EXPECT_TRUE(is_valid_device_id("a.b_c-D9"));
  EXPECT_TRUE(is_valid_device_id(std::string(64, 'x')));
  EXPECT_FALSE(is_valid_device_id(std::string(65, 'x')));
  EXPECT_FALSE(is_valid_device_id(""));
  EXPECT_FALSE(is_valid_device_id("dev 42"));
  EXPECT_FALSE(is_valid_device_id("dev:42"));
  EXPECT_FALSE(is_valid_device_id("dev-*"));
}

}  // namespace
}  // namespace tether::server
