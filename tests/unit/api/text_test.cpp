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
  EXPECT_EQ(*parse_duration("5h"), std::chrono::hours(5));
  EXPECT_EQ(*parse_duration("0s"), std::chrono::milliseconds(0));
}

TEST(Duration, ReadsDecimals) {
  EXPECT_EQ(*parse_duration("0.5s"), std::chrono::milliseconds(500));
  EXPECT_EQ(*parse_duration("0.5"), std::chrono::milliseconds(500));
  EXPECT_EQ(*parse_duration("1.25m"), std::chrono::milliseconds(75000));
  EXPECT_EQ(*parse_duration("1.5h"), std::chrono::minutes(90));
  EXPECT_EQ(*parse_duration(".5s"), std::chrono::milliseconds(500));
  EXPECT_EQ(*parse_duration("2.000ms"), std::chrono::milliseconds(2));
  EXPECT_EQ(parse_duration("1.5ms").message(), "'1.5ms' is finer than a millisecond");
  EXPECT_EQ(parse_duration("0.0001s").message(), "'0.0001s' is finer than a millisecond");
}

TEST(Duration, SaysWhatIsWrong) {
  const std::string like = " is not a duration (like 5s, 0.5s, 500ms, 2m, 1h)";
  for (const char* bad : {"", "-1s", "5d", "1..5s", ".s", "1.5.2s", "5 s", "s", "1h30m"})
    EXPECT_EQ(parse_duration(bad).message(), "'" + std::string(bad) + "'" + like) << bad;
  EXPECT_EQ(parse_duration("99999h").message(), "'99999h' is too long (at most 24h)");
  EXPECT_EQ(parse_duration("9999999999s").message(), "'9999999999s' is too long (at most 24h)");
  EXPECT_EQ(parse_duration("99999999999999999999999ms").message(),
            "'99999999999999999999999ms' is too long (at most 24h)");
  EXPECT_EQ(*parse_duration("24h"), std::chrono::hours(24));
  EXPECT_EQ(parse_duration("24.001h").message(), "'24.001h' is too long (at most 24h)");
  EXPECT_EQ(parse_duration("31s", std::chrono::seconds(30)).message(),
            "'31s' is too long (at most 30s)");
}

TEST(Duration, WritesTheLargestExactUnit) {
  EXPECT_EQ(duration_text(std::chrono::hours(24)), "24h");
  EXPECT_EQ(duration_text(std::chrono::minutes(90)), "90m");
  EXPECT_EQ(duration_text(std::chrono::seconds(30)), "30s");
  EXPECT_EQ(duration_text(std::chrono::milliseconds(1500)), "1500ms");
  EXPECT_EQ(duration_text(std::chrono::milliseconds(0)), "0s");
}

}  // namespace
}  // namespace tether::api
