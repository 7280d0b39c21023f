// known_hosts parsing and checking, base64 and fingerprints; compared with what OpenSSH's
// own ssh-keygen writes and prints where it matters (hashed names, fingerprints).

#include "tether/transport/ssh_known_hosts.hpp"

#include <gtest/gtest.h>

#include "ssh_test_env.hpp"
#include "tether/transport/ssh_util.hpp"

namespace tether::transport {
namespace {

using namespace tether::test;

// Public key blobs made up for the tests: only their type prefix matters to the parser.
std::string blob(std::string_view type, std::string_view body) {
  std::string b;
  auto put = [&b](std::string_view s) {
    const auto n = std::uint32_t(s.size());
    b += char(n >> 24);
    b += char(n >> 16);
    b += char(n >> 8);
    b += char(n);
    b += s;
  };
  put(type);
  put(body);
  return b;
}

std::string line(std::string_view hosts, const std::string& key) {
  return std::string(hosts) + " " + ssh_key_type_of_blob(key) + " " + base64_encode(key) + "\n";
}

const std::string ed_a = blob("ssh-ed25519", "key-a");
const std::string ed_b = blob("ssh-ed25519", "key-b");
const std::string ec_a = blob("ecdsa-sha2-nistp256", "key-c");

TEST(SshUtil, Base64RoundTripsEveryLengthAndRejectsGarbage) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(base64_decode(base64_encode(data)), data) << i;
    data += char(i * 37);
  }
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_decode("Zm8"), "fo");  // padding optional
  EXPECT_FALSE(base64_decode("Zm9v!"));
  EXPECT_FALSE(base64_decode("Z"));
}

TEST(SshUtil, SshStringReaderStopsAtTruncatedInput) {
  std::string_view in(
      "\0\0\0\x03"
      "abc"
      "\0\0\0\x09"
      "ab",
      13);
  EXPECT_EQ(read_ssh_string(in), "abc");
  EXPECT_FALSE(read_ssh_string(in));
  EXPECT_EQ(ssh_key_type_of_blob(std::string_view("\xff\xff\xff\xff", 4)), "");
}

TEST(SshUtil, FingerprintAndNameMatchSshKeygen) {
  const ssh_keys keys;
  for (const auto* key : {&keys.host_ed25519, &keys.host_ecdsa, &keys.user_rsa}) {
    std::istringstream pub(read_text(ssh_keys::pub(*key)));
    std::string type, b64;
    pub >> type >> b64;
    const auto raw = base64_decode(b64);
    ASSERT_TRUE(raw);
    EXPECT_EQ(ssh_fingerprint_sha256(*raw), ssh_keys::fingerprint(*key)) << type;
    EXPECT_EQ(ssh_key_type_of_blob(*raw), type);
  }
  EXPECT_EQ(ssh_key_display_name("ssh-ed25519"), "ED25519");
  EXPECT_EQ(ssh_key_display_name("ecdsa-sha2-nistp384"), "ECDSA");
  EXPECT_EQ(ssh_key_display_name("ssh-rsa"), "RSA");
}

TEST(KnownHosts, NamesCarryThePortUnless22) {
  EXPECT_EQ(known_host_name("Tunnel.Example.com", 22), "tunnel.example.com");
  EXPECT_EQ(known_host_name("tunnel.example.com", 999), "[tunnel.example.com]:999");
  EXPECT_EQ(known_host_name("::1", 2222), "[::1]:2222");
}

TEST(KnownHosts, PatternsMatchLikeOpenSsh) {
  EXPECT_TRUE(known_host_field_matches("a.example.com,b.example.com", "b.example.com"));
  EXPECT_TRUE(known_host_field_matches("*.example.com", "a.example.com"));
  EXPECT_TRUE(known_host_field_matches("host?", "host1"));
  EXPECT_FALSE(known_host_field_matches("host?", "host12"));
  EXPECT_TRUE(known_host_field_matches("A.Example.COM", "a.example.com"));
  EXPECT_FALSE(known_host_field_matches("*.example.com,!bad.example.com", "bad.example.com"));
  EXPECT_TRUE(known_host_field_matches("*.example.com,!bad.example.com", "good.example.com"));
  EXPECT_FALSE(known_host_field_matches("!bad.example.com", "good.example.com"));  // no positive
  EXPECT_TRUE(known_host_field_matches("[h]:2222", "[h]:2222"));
  EXPECT_FALSE(known_host_field_matches("h", "[h]:2222"));  // port 22 lines do not match 2222
  EXPECT_TRUE(known_host_field_matches("[*]:2222", "[h]:2222"));
}

TEST(KnownHosts, HashedNamesWrittenBySshKeygenMatch) {
  const temp_dir dir;
  const auto file = dir.path() / "known_hosts";
  write_text(file, line("[127.0.0.1]:2222", ed_a) + line("tunnel.example.com", ec_a));
  ASSERT_EQ(run({"ssh-keygen", "-q", "-H", "-f", file.string()}), 0);
  const auto text = read_text(file);
  ASSERT_EQ(text.find("127.0.0.1"), std::string::npos) << text;
  auto kh = known_hosts::load(file);
  ASSERT_TRUE(kh);
  ASSERT_EQ(kh->entries().size(), 2u);
  EXPECT_EQ(kh->check("[127.0.0.1]:2222", ed_a).what, known_hosts::status::match);
  EXPECT_EQ(kh->check("tunnel.example.com", ec_a).what, known_hosts::status::match);
  EXPECT_EQ(kh->check("[127.0.0.1]:2223", ed_a).what, known_hosts::status::not_found);
  EXPECT_EQ(kh->key_types_for("tunnel.example.com"),
            std::vector<std::string>{"ecdsa-sha2-nistp256"});
}

TEST(KnownHosts, CheckTellsMatchChangedOtherTypeRevokedAndUnknown) {
  const auto kh = known_hosts::parse(
      "# comment\n"
      "\n" +
      line("h1", ed_a) + line("h2", ed_b) + line("h2", ec_a) + line("h3", ec_a) + "@revoked " +
      line("*", ed_b) + "@cert-authority " + line("h4", ed_a) +
      "garbage line\n"
      "h5 ssh-ed25519 !!!notbase64\n"
      "h6 1024 35 12345\n");
  using st = known_hosts::status;
  EXPECT_EQ(kh.check("h1", ed_a).what, st::match);
  EXPECT_EQ(kh.check("h1", ed_a).entry->line, 3u);
  EXPECT_EQ(kh.check("h2", ec_a).what, st::match);  // one of several keys of the host
  const auto changed = kh.check("h3", blob("ecdsa-sha2-nistp256", "other"));
  EXPECT_EQ(changed.what, st::changed);
  EXPECT_EQ(changed.entry->line, 6u);
  EXPECT_EQ(kh.check("h3", ed_a).what, st::other_type);
  EXPECT_EQ(kh.check("h1", ed_b).what, st::revoked);
  EXPECT_EQ(kh.check("h4", ed_a).what, st::not_found);  // CA lines are not host keys
  EXPECT_EQ(kh.check("nowhere", ed_a).what, st::not_found);
  EXPECT_EQ(kh.key_types_for("h2"),
            (std::vector<std::string>{"ssh-ed25519", "ecdsa-sha2-nistp256"}));
  EXPECT_TRUE(kh.key_types_for("h5").empty());
}

TEST(KnownHosts, AppendCreatesTheFileAndKeepsLinesApart) {
  const temp_dir dir;
  const auto file = dir.path() / "new" / "known_hosts";
  ASSERT_TRUE(append_known_host(file, known_hosts_line("[h]:2222", ed_a)));
  EXPECT_EQ(read_text(file), line("[h]:2222", ed_a));
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  const auto other = dir.path() / "no_newline";
  write_text(other, "h1 ssh-ed25519 AAAA");
  ASSERT_TRUE(append_known_host(other, known_hosts_line("h2", ed_b)));
  EXPECT_EQ(read_text(other), "h1 ssh-ed25519 AAAA\n" + line("h2", ed_b));
  EXPECT_EQ(known_hosts::parse(read_text(other)).check("h2", ed_b).what,
            known_hosts::status::match);
}

TEST(KnownHosts, MissingFileIsEmpty) {
  const temp_dir dir;
  auto kh = known_hosts::load(dir.path() / "absent");
  ASSERT_TRUE(kh);
  EXPECT_TRUE(kh->entries().empty());
}

}  // namespace
}  // namespace tether::transport
