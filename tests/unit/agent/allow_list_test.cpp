#include "tether/agent/allow_list.hpp"

#include <gtest/gtest.h>

namespace tether::agent {
namespace {

TEST(AllowList, PortsAndRanges) {
  const auto a = parse_allow_list("22, 80,5000-5100");
  ASSERT_TRUE(a) << a.message();
  EXPECT_TRUE(a->allows(22));
  EXPECT_TRUE(a->allows(80));
  EXPECT_TRUE(a->allows(5000));
  EXPECT_TRUE(a->allows(5100));
  EXPECT_FALSE(a->allows(5101));
  EXPECT_FALSE(a->allows(23));
  EXPECT_EQ(a->text(), "22,80,5000-5100");
}

TEST(AllowList, NothingUnlessListed) {
  EXPECT_FALSE(allow_list().allows(22));
}

TEST(AllowList, MistakesAreNamed) {
  EXPECT_EQ(parse_allow_list("").message(), "an empty item: give ports like 22,80,5000-5100");
  EXPECT_EQ(parse_allow_list("22,,80").message(), "an empty item: give ports like 22,80,5000-5100");
  EXPECT_EQ(parse_allow_list("ssh").message(), "'ssh' is not a port (1-65535)");
  EXPECT_EQ(parse_allow_list("0").message(), "'0' is not a port (1-65535)");
  EXPECT_EQ(parse_allow_list("65536").message(), "'65536' is not a port (1-65535)");
  EXPECT_EQ(parse_allow_list("100-90").message(), "'100-90': the range ends before it starts");
  EXPECT_EQ(parse_allow_list("5000-").message(),
            "'5000-' is not a range of ports like 5000-5100 (1-65535)");
}

}  // namespace
}  // namespace tether::agent
