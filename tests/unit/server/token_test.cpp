#include "tether/server/token.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <set>

namespace tether::server {
namespace {

namespace fs = std::filesystem;

TEST(Token, GeneratedTokensHavePrefixLengthAndUrlSafeAlphabet) {
  const std::string t = generate_token();
  ASSERT_EQ(t.size(), 3u + 43u);  // "tt_" + 32 bytes in unpadded base64url
  EXPECT_EQ(t.substr(0, 3), "tt_");
  for (char c : t.substr(3)) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << t;
  }
}

TEST(Token, GeneratedTokensDiffer) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(generate_token());
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Token, Sha256KnownVectors) {
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(to_hex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Token, HexRoundTripsInEitherCase) {
  const auto d = sha256("tt_example");
  const std::string hex = to_hex(d);
  ASSERT_EQ(hex.size(), 64u);
  EXPECT_EQ(parse_sha256_hex(hex), d);
  std::string upper = hex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(parse_sha256_hex(upper), d);
}

TEST(Token, HexRejectsWrongLengthAndNonHex) {
  const std::string hex = to_hex(sha256("x"));
  EXPECT_FALSE(parse_sha256_hex(""));
  EXPECT_FALSE(parse_sha256_hex(hex.substr(1)));
  EXPECT_FALSE(parse_sha256_hex(hex + "0"));
  std::string bad = hex;
  bad[10] = 'g';
  EXPECT_FALSE(parse_sha256_hex(bad));
  bad = hex;
  bad[63] = ' ';
  EXPECT_FALSE(parse_sha256_hex(bad));
}

TEST(Token, MatchesOnlyTheHashedToken) {
  const std::string t = generate_token();
  const auto h = sha256(t);
  EXPECT_TRUE(token_matches(t, h));
  EXPECT_FALSE(token_matches(t + "x", h));
  EXPECT_FALSE(token_matches(t.substr(0, t.size() - 1), h));
  EXPECT_FALSE(token_matches("", h));
  EXPECT_FALSE(token_matches(generate_token(), h));
}

class TokenFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tether-token-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  fs::path dir_;
};

std::string message_of(const fs::path& p) {
  try {
    read_token_file(p);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "no exception";
}

TEST_F(TokenFile, TrimsSurroundingWhitespace) {
  EXPECT_EQ(read_token_file(write("a", "tt_abc\n")), "tt_abc");
  EXPECT_EQ(read_token_file(write("b", "  \ttt_abc \r\n\n")), "tt_abc");
  EXPECT_EQ(read_token_file(write("c", "tt_abc")), "tt_abc");
}

TEST_F(TokenFile, MissingFileNamesTheFile) {
  const fs::path p = dir_ / "nope";
  EXPECT_EQ(message_of(p),
            "token file '" + p.string() + "': cannot open: No such file or directory");
}

TEST_F(TokenFile, EmptyOrBlankFileIsAnError) {
  const auto e = write("empty", "");
  EXPECT_EQ(message_of(e), "token file '" + e.string() + "' is empty");
  const auto b = write("blank", " \n\n");
  EXPECT_EQ(message_of(b), "token file '" + b.string() + "' is empty");
}

TEST_F(TokenFile, TwoTokensOrHugeFilesAreRefused) {
  const auto two = write("two", "tt_a\ntt_b\n");
  EXPECT_EQ(message_of(two),
            "token file '" + two.string() + "': whitespace inside the token (one token per file)");
  const auto big = write("big", std::string(5000, 'a'));
  EXPECT_EQ(message_of(big),
            "token file '" + big.string() + "': larger than 4096 bytes, not a token");
}

TEST_F(TokenFile, DirectoryIsRefused) {
  EXPECT_NE(message_of(dir_).find("token file '" + dir_.string() + "'"), std::string::npos);
}

}  // namespace
}  // namespace tether::server
