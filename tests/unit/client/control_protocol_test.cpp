// The control protocol's codec (docs/CONTROL.md) and the names it speaks of: requests and
// replies survive a round trip byte for byte, every malformed request gets words (never a
// crash, whatever its shape or size), and `tether map rm` finds mappings by name, address
// or bare port.

#include "tether/client/control_protocol.hpp"

#include <gtest/gtest.h>

#include "tether/client/mapping_names.hpp"

namespace tether::client {
namespace {

using namespace std::chrono_literals;

mapping_status tcp_status(std::string name, std::string local) {
  mapping_status m;
  m.name = std::move(name);
  m.server = "tunnel.example.com:7443";
  m.local = std::move(local);
  m.device = "dev-42";
  m.device_port = 22;
  m.connections = 2;
  m.total = 7;
  m.bytes_out = 1234567890123ull;
  m.bytes_in = 42;
  m.since = std::chrono::system_clock::from_time_t(1740832496);  // 2025-03-01T12:34:56Z
  return m;
}

mapping_status udp_status() {
  auto m = tcp_status("dns", "[::1]:5353");
  m.proto = mux::protocol::udp;
  m.device_port = 53;
  m.state = mapping_state::failed;
  m.error = "forbidden (dev-42:53/udp is not in the ACL)";
  m.total = 0;
  m.datagrams_out = 10;
  m.datagrams_in = 9;
  m.dropped = 1;
  return m;
}

void expect_same(const mapping_status& a, const mapping_status& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.server, b.server);
  EXPECT_EQ(a.local, b.local);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.device_port, b.device_port);
  EXPECT_EQ(a.proto, b.proto);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.connections, b.connections);
  EXPECT_EQ(a.total, b.total);
  EXPECT_EQ(a.bytes_out, b.bytes_out);
  EXPECT_EQ(a.bytes_in, b.bytes_in);
  EXPECT_EQ(a.datagrams_out, b.datagrams_out);
  EXPECT_EQ(a.datagrams_in, b.datagrams_in);
  EXPECT_EQ(a.dropped, b.dropped);
  EXPECT_EQ(a.since, b.since);
}

TEST(ControlProtocol, RequestsRoundTrip) {
  control_request add;
  add.op = control_op::add;
  add.id = "17";
  add.spec = "127.0.0.1:0:dev-42:53";
  add.proto = mux::protocol::udp;
  add.name = "dns";
  add.check = true;
  add.server = "a:1";
  const auto line = format_control_request(add);
  EXPECT_EQ(line,
            R"({"id":17,"op":"add","spec":"127.0.0.1:0:dev-42:53","proto":"udp","name":"dns",)"
            R"("check":true,"server":"a:1"})");
  auto back = parse_control_request(line);
  ASSERT_TRUE(back) << back.message();
  EXPECT_EQ(back->op, control_op::add);
  EXPECT_EQ(back->id, "17");
  EXPECT_EQ(back->spec, add.spec);
  EXPECT_EQ(back->proto, mux::protocol::udp);
  EXPECT_EQ(back->name, "dns");
  EXPECT_TRUE(back->check);
  EXPECT_EQ(back->server, "a:1");

  control_request rm;
  rm.op = control_op::rm;
  rm.mapping = "127.0.0.1:2222";
  rm.now = true;
  EXPECT_EQ(format_control_request(rm), R"({"op":"rm","mapping":"127.0.0.1:2222","now":true})");
  auto rm_back = parse_control_request(format_control_request(rm));
  ASSERT_TRUE(rm_back);
  EXPECT_EQ(rm_back->mapping, rm.mapping);
  EXPECT_TRUE(rm_back->now);

  auto ls = parse_control_request(R"({"op":"ls"})");
  ASSERT_TRUE(ls);
  EXPECT_EQ(ls->op, control_op::ls);
  EXPECT_TRUE(ls->id.empty());
}

TEST(ControlProtocol, DefaultsAndUnknownFieldsOfRequests) {
  // proto defaults to tcp, check and now to false; fields this version does not know are
  // ignored (a newer tether map may send them), and null is as good as absent.
  auto add = parse_control_request(
      R"({"op":"add","spec":"0:dev-1:22","name":null,"future":{"x":[1,2]},"check":false})");
  ASSERT_TRUE(add) << add.message();
  EXPECT_EQ(add->proto, mux::protocol::tcp);
  EXPECT_TRUE(add->name.empty());
  EXPECT_FALSE(add->check);
  auto rm = parse_control_request(R"({"op":"rm","mapping":"x"})");
  ASSERT_TRUE(rm);
  EXPECT_FALSE(rm->now);
}

TEST(ControlProtocol, MalformedRequestsAreRefusedWithWords) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "malformed JSON"},
      {"ls", "malformed JSON"},
      {"{\"op\":\"ls\"", "malformed JSON"},
      {"{\"op\":\"ls\"} trailing", "malformed JSON"},
      {"\xff\xfe", "malformed JSON"},
      {"{\"op\":\"\xc3\x28\"}", "malformed JSON"},  // not UTF-8 inside a string
      {"[]", "a request is a JSON object"},
      {"\"ls\"", "a request is a JSON object"},
      {"{}", "missing field 'op'"},
      {"{\"op\":1}", "field 'op' must be a string"},
      {"{\"op\":\"LS\"}", "unknown op 'LS' (info, ls, add or rm)"},
      {"{\"op\":\"add\"}", "missing field 'spec'"},
      {"{\"op\":\"add\",\"spec\":[]}", "field 'spec' must be a string"},
      {"{\"op\":\"add\",\"spec\":\"x\",\"proto\":\"sctp\"}", "field 'proto' must be"},
      {"{\"op\":\"add\",\"spec\":\"x\",\"check\":1}", "field 'check' must be true or false"},
      {"{\"op\":\"add\",\"spec\":\"x\",\"name\":7}", "field 'name' must be a string"},
      {"{\"op\":\"rm\"}", "missing field 'mapping'"},
      {"{\"op\":\"rm\",\"mapping\":\"x\",\"now\":\"yes\"}", "field 'now' must be true or false"},
  };
  for (const auto& [line, words] : cases) {
    const auto r = parse_control_request(line);
    ASSERT_FALSE(r) << line;
    EXPECT_NE(r.message().find(words), std::string::npos) << line << " -> " << r.message();
  }
  // An unknown op is quoted short, whatever its length.
  const auto r = parse_control_request("{\"op\":\"" + std::string(5000, 'x') + "\"}");
  ASSERT_FALSE(r);
  EXPECT_LT(r.message().size(), 120u);
}

TEST(ControlProtocol, EveryCutOfARequestIsRefusedCleanly) {
  const std::string line =
      R"({"id":{"a":[1,"two",null]},"op":"add","spec":"[::1]:0:dev-42:22","name":"n","check":true})";
  ASSERT_TRUE(parse_control_request(line));
  for (std::size_t n = 0; n < line.size(); ++n)
    EXPECT_FALSE(parse_control_request(line.substr(0, n))) << "cut at " << n;
}

TEST(ControlProtocol, DeepNestingAtTheLineBoundIsRefusedNotOverflowed) {
  const std::string deep(max_control_request, '[');
  EXPECT_FALSE(parse_control_request(deep));
  const std::string balanced =
      std::string(max_control_request / 2, '[') + std::string(max_control_request / 2, ']');
  const auto r = parse_control_request(balanced);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("nested deeper than 64"), std::string::npos);
  // An id is echoed in the reply, and printing recurses per level: deep ids are refused.
  const std::string deep_id =
      "{\"op\":\"ls\",\"id\":" + std::string(30000, '[') + std::string(30000, ']') + "}";
  const auto deep_refused = parse_control_request(deep_id);
  ASSERT_FALSE(deep_refused);
  EXPECT_NE(deep_refused.message().find("nested deeper than 64"), std::string::npos);
  const std::string id =
      "{\"op\":\"ls\",\"id\":" + std::string(60, '[') + std::string(60, ']') + "}";
  auto ok = parse_control_request(id);
  ASSERT_TRUE(ok) << ok.message();
  EXPECT_EQ(ok->id.size(), 120u);  // echoed as it came
  EXPECT_TRUE(parse_control_request("{\"op\":\"ls\",\"id\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                                    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}"));  // inside a string
}

TEST(ControlProtocol, RepliesRoundTrip) {
  control_reply ls;
  ls.id = "\"x\"";
  ls.mappings = {tcp_status("ssh", "127.0.0.1:2222"), udp_status()};
  const auto line = format_control_reply(ls);
  EXPECT_EQ(line.find("{\"id\":\"x\",\"ok\":true,\"mappings\":[{\"name\":\"ssh\""), 0u) << line;
  EXPECT_NE(line.find("\"since\":\"2025-03-01T12:34:56Z\""), std::string::npos);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = parse_control_reply(line);
  ASSERT_TRUE(back) << back.message();
  EXPECT_EQ(back->id, "\"x\"");
  EXPECT_FALSE(back->failure);
  ASSERT_EQ(back->mappings.size(), 2u);
  expect_same(back->mappings[0], ls.mappings[0]);
  expect_same(back->mappings[1], ls.mappings[1]);

  control_reply one;
  one.mapping = tcp_status("web", "0.0.0.0:8080");
  auto one_back = parse_control_reply(format_control_reply(one));
  ASSERT_TRUE(one_back);
  ASSERT_TRUE(one_back->mapping);
  expect_same(*one_back->mapping, *one.mapping);

  control_reply info;
  info.info = control_info{4242, "0.1.0", {"a:1", "b:2"}, 3};
  EXPECT_EQ(format_control_reply(info),
            R"({"ok":true,"pid":4242,"version":"0.1.0","servers":["a:1","b:2"],"mappings":3})");
  auto info_back = parse_control_reply(format_control_reply(info));
  ASSERT_TRUE(info_back);
  ASSERT_TRUE(info_back->info);
  EXPECT_EQ(info_back->info->pid, 4242);
  EXPECT_EQ(info_back->info->servers, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(info_back->info->mappings, 3u);

  // An empty listing is an empty array, not a missing field.
  EXPECT_EQ(format_control_reply(control_reply{}), R"({"ok":true,"mappings":[]})");
}

TEST(ControlProtocol, ErrorRepliesCarryTheirCodeAndWords) {
  control_reply r;
  r.id = "3";
  r.failure = {control_errc::in_use, "127.0.0.1:2222 is in use"};
  const auto line = format_control_reply(r);
  EXPECT_EQ(line, R"({"id":3,"ok":false,"error":"in_use","message":"127.0.0.1:2222 is in use"})");
  auto back = parse_control_reply(line);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->failure.code, control_errc::in_use);
  EXPECT_EQ(back->failure.message, "127.0.0.1:2222 is in use");

  for (int i = 1; i <= static_cast<int>(control_errc::forbidden); ++i) {
    control_reply each;
    each.failure = {static_cast<control_errc>(i), "x"};
    auto b = parse_control_reply(format_control_reply(each));
    ASSERT_TRUE(b);
    EXPECT_EQ(b->failure.code, each.failure.code) << control_errc_name(each.failure.code);
  }
  // A code from a newer version still fails, with the peer's words.
  auto newer = parse_control_reply(R"({"ok":false,"error":"quota","message":"too many"})");
  ASSERT_TRUE(newer);
  EXPECT_TRUE(newer->failure);
  EXPECT_EQ(newer->failure.message, "too many");
}

TEST(ControlProtocol, TextThatIsNotUtf8IsReplacedInReplies) {
  control_reply r;
  r.failure = {control_errc::bad_spec, "-L '\xff\xfe': expected [BIND:]LPORT:DEVICE:DPORT"};
  const auto line = format_control_reply(r);
  auto back = parse_control_reply(line);
  ASSERT_TRUE(back) << back.message();
  EXPECT_NE(back->failure.message.find("expected [BIND:]LPORT"), std::string::npos);
}

TEST(ControlProtocol, MalformedRepliesAreErrorsNotCrashes) {
  for (const char* line :
       {"", "nope", "[]", "{}", R"({"ok":"yes"})", R"({"ok":true,"mappings":{}})",
        R"({"ok":true,"mappings":[1]})", R"({"ok":true,"mapping":{"name":"x"}})",
        R"({"ok":true,"mappings":[{"name":"a","local":"b","device":"c",)"
        R"("port":70000,"proto":"tcp","state":"listening","since":"x"}]})",
        R"({"ok":true,"mappings":[{"name":"a","local":"b","device":"c",)"
        R"("port":1,"proto":"tcp","state":"listening","since":"x"}]})",
        R"({"ok":true,"mappings":[{"name":"a","local":"b","device":"c",)"
        R"("port":1,"proto":"tcp","state":"odd","since":"x"}]})",
        R"({"ok":true,"mappings":[{"name":"a","local":"b","device":"c",)"
        R"("port":1,"proto":"tcp","state":"listening",)"
        R"("bytes_in":-5,"since":"2025-03-01T12:34:56Z"}]})"})
    EXPECT_FALSE(parse_control_reply(line)) << line;
}

TEST(ControlProtocol, Iso8601Utc) {
  EXPECT_EQ(iso8601_utc(std::chrono::system_clock::from_time_t(0)), "1970-01-01T00:00:00Z");
  EXPECT_EQ(iso8601_utc(std::chrono::system_clock::from_time_t(1740832496) + 999ms),
            "2025-03-01T12:34:56Z");
}

TEST(ControlProtocol, ResolveByNameThenAddressThenBarePort) {
  const std::vector<mapping_status> all = {
      tcp_status("ssh", "127.0.0.1:2222"), tcp_status("web", "127.0.0.1:8080"),
      tcp_status("web2", "[::1]:8080"), tcp_status("127.0.0.1:8080", "127.0.0.1:9999")};
  EXPECT_EQ(resolve_mapping(all, "ssh").name, "ssh");
  EXPECT_EQ(resolve_mapping(all, "127.0.0.1:2222").name, "ssh");
  EXPECT_EQ(resolve_mapping(all, "[::1]:8080").name, "web2");
  EXPECT_EQ(resolve_mapping(all, "2222").name, "ssh");
  // A name wins over another mapping's address.
  EXPECT_EQ(resolve_mapping(all, "127.0.0.1:8080").name, "127.0.0.1:8080");
  // A port two mappings listen on says which they are.
  const auto two = resolve_mapping(all, "8080");
  EXPECT_EQ(two.failure.code, control_errc::ambiguous);
  EXPECT_NE(two.failure.message.find("127.0.0.1:8080 (web), [::1]:8080 (web2)"), std::string::npos)
      << two.failure.message;
  for (const char* missing : {"nope", "1", "22222", "127.0.0.1:1", "", "99999999999"})
    EXPECT_EQ(resolve_mapping(all, missing).failure.code, control_errc::not_found) << missing;
}

TEST(MappingNames, DefaultsAreTheTargetAndStayUnique) {
  mapping m;
  m.device = "dev-42";
  m.device_port = 22;
  mapping_names names;
  EXPECT_EQ(names.claim_default(m), "dev-42:22");
  EXPECT_EQ(names.claim_default(m), "dev-42:22#2");
  EXPECT_EQ(names.claim_default(m), "dev-42:22#3");
  names.release("dev-42:22");
  EXPECT_EQ(names.claim_default(m), "dev-42:22");
  m.proto = mux::protocol::udp;
  m.device_port = 53;
  EXPECT_EQ(names.claim_default(m), "dev-42:53/udp");
  m.device = "fd00::1";
  EXPECT_EQ(default_mapping_name(m), "[fd00::1]:53/udp");
  EXPECT_FALSE(names.claim("dev-42:22#2"));
  EXPECT_TRUE(names.claim("ssh"));
  EXPECT_TRUE(names.taken("ssh"));
}

TEST(MappingNames, ChosenNamesAreChecked) {
  for (const std::string& good :
       {std::string("a"), std::string("pi-ssh"), std::string("Dev_42.web"), std::string("9lives"),
        std::string(64, 'n')})
    EXPECT_TRUE(check_mapping_name(good)) << good;
  for (const std::string& bad : {std::string(), std::string("-x"), std::string(".x"),
                                 std::string("a b"), std::string("dev-42:22"), std::string("a/b"),
                                 std::string("\xc3\xa9t\xc3\xa9"), std::string(65, 'n')}) {
    const auto r = check_mapping_name(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_LT(r.message().size(), 140u);
    }
  }
}

}  // namespace
}  // namespace tether::client
