#include "tether/api/text.hpp"

#include <gtest/gtest.h>

namespace tether::api {
namespace {

TEST(Form, DecodesFieldsPlusAndPercent) {
  auto f = parse_form("data=a+b%21&wait_for_reply_ms=500&&empty=");
  ASSERT_TRUE(f) << f.message();
  ASSERT_EQ(f->size(), 3u);
  EXPECT_EQ(*form_value(*f, "data"), "a b!");
  EXPECT_EQ(*form_value(*f, "wait_for_reply_ms"), "500");
  EXPECT_EQ(*form_value(*f, "empty"), "");
  EXPECT_EQ(form_value(*f, "missing"), nullptr);
}

TEST(Form, RefusesBadEscapesAndTooManyFields) {
  EXPECT_FALSE(parse_form("a=%4"));
  EXPECT_FALSE(parse_form("a=%zz"));
  EXPECT_FALSE(parse_form("a=%"));
  EXPECT_FALSE(parse_form("a=1&b=2&c=3", 2));
}

TEST(Form, EveryPrefixOfAnEscapedFieldParsesOrFailsWithoutReadingPastTheEnd) {
  const std::string text = "data=%E2%82%AC+x";
  for (std::size_t n = 0; n <= text.size(); ++n) (void)parse_form(text.substr(0, n));
  EXPECT_EQ(*form_value(*parse_form(text), "data"), "\xE2\x82\xAC x");
}

TEST(PercentEncode, KeepsUnreservedOnly) {
  EXPECT_EQ(percent_encode("dev-42_a.b~"), "dev-42_a.b~");
  EXPECT_EQ(percent_encode("a b/c"), "a%20b%2Fc");
  EXPECT_EQ(*percent_decode(percent_encode("\x01\xff/?")), "\x01\xff/?");
}

TEST(Utf8, AcceptsWellFormedAndRefusesTheRest) {
  EXPECT_TRUE(is_utf8("plain"));
  EXPECT_TRUE(is_utf8("\xE2\x82\xAC and \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_utf8("\x80"));
  EXPECT_FALSE(is_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_utf8("\xED\xA0\x80"));      // a surrogate
  EXPECT_FALSE(is_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_utf8("\xE2\x82"));          // cut short
}

TEST(Duration, ReadsUnits) {
  EXPECT_EQ(*parse_duration("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(*parse_duration("5s"), std::chrono::milliseconds(5000));
  EXPECT_EQ(*parse_duration("5"), std::chrono::milliseconds(5000));
  EXPECT_EQ(*parse_duration("2m"), std::chrono::milliseconds(120000));
  EXPECT_FALSE(parse_duration(""));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_FALSE(parse_duration("5h"));
  EXPECT_FALSE(parse_duration("9999999999s"));
}

}  // namespace
}  // namespace tether::api
