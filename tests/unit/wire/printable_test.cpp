#include "tether/printable.hpp"

#include <gtest/gtest.h>

namespace tether {
namespace {

TEST(Printable, KeepsPrintableAscii) {
  EXPECT_EQ(printable("device dev-42 refused: connection refused"),
            "device dev-42 refused: connection refused");
  EXPECT_EQ(printable(""), "");
}

TEST(Printable, ForgedLineStaysOnOneLine) {
  const auto out = printable("bye\n[2026-01-01 00:00:00.000] [info] credential 'admin'\r");
  EXPECT_EQ(out, "bye\\n[2026-01-01 00:00:00.000] [info] credential 'admin'\\r");
  EXPECT_EQ(out.find('\n'), std::string::npos);
}

TEST(Printable, EscapesTerminalControlAndHighBytes) {
  EXPECT_EQ(printable("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(printable(std::string_view("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("\x7f\xff\t"), "\\x7f\\xff\\t");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\\xc3\\xa9");
}

TEST(Printable, BackslashIsDoubledSoEscapesCannotBeForged) {
  EXPECT_EQ(printable("\\x1b"), "\\\\x1b");
}

}  // namespace
}  // namespace tether
