// The control socket in front of real proxies: mappings added through it serve at once and
// count their bytes live; removing one drains or cuts its connections and leaves the others
// alone; malformed or oversized requests, too many connections and idle ones are dealt
// with without disturbing anything else; several proxies share one socket and one set of
// names; the socket file is private and removed when the server goes.

#include "tether/client/control_server.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read_until.hpp>
#include <asio/write.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../mux/session_fixture.hpp"
#include "dial_outcome_of.hpp"
#include "tether/client/control_protocol.hpp"

namespace tether::client {
namespace {

using testing::give;

using asio::ip::tcp;
using asio::local::stream_protocol;
using json = nlohmann::json;
using namespace std::chrono_literals;

struct quiet_events final : event_sink {
  void listening(const mapping&, const std::string&, const std::string&) override { ++listening_count; }
  void connected(const std::string&) override {}
  void disconnected(const std::string&, std::chrono::milliseconds) override {}
  void stream_error(const mapping&, const std::string&, errc, const std::string&) override {}
  int listening_count = 0;
};

std::uint16_t port_of(const std::string& local) {
  return static_cast<std::uint16_t>(std::stoi(local.substr(local.rfind(':') + 1)));
}

class ControlServer : public mux::testing::session_fixture {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tether-control-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    socket_path = dir / "c.sock";
  }

  void TearDown() override {
    if (control) control->stop();
    for (auto& p : proxies) p->stop();
    for (auto& r : runs) EXPECT_TRUE(run_until([&] { return r->has_value(); }));
    control.reset();
    proxies.clear();
    settle();
    session_fixture::TearDown();
    std::filesystem::remove_all(dir);
  }

  // A device session: every stream is echoed, except to "dev-forbidden", which the server
  // refuses as an ACL would.
  std::shared_ptr<mux::tunnel> device_session() {
    auto pair = connect_pair({}, [this](mux::incoming_stream in) {
      ++streams_opened;
      if (in.target().device == "dev-forbidden") return in.refuse(errc::forbidden, "not allowed");
      mux::testing::echo(std::move(in), ex());
    });
    return pair.client;
  }

  proxy& start_proxy(std::string server, std::shared_ptr<mapping_names> names = nullptr) {
    proxy_options o;
    o.server = std::move(server);
    o.names = std::move(names);
    o.drain = 2s;
    auto t = device_session();
    proxies.push_back(std::make_unique<proxy>(
        ex(), std::vector<mapping>{}, [t] { return give(t); }, events, o));
    auto& p = *proxies.back();
    auto first = start(p.connect_first());
    EXPECT_TRUE(run_until([&] { return first->has_value(); }));
    EXPECT_FALSE(p.listen());
    runs.push_back(start(p.run()));
    return p;
  }

  void start_control(control_server_options o = {}) {
    control.emplace(ex(), socket_path, o);
    for (auto& p : proxies) control->add_proxy(*p);
    control->start();
  }

  // A control connection driven from the test.
  struct peer {
    explicit peer(ControlServer& t) : test(t), sock(t.io) {
      sock.connect(stream_protocol::endpoint(t.socket_path.string()));
    }
    void send(const std::string& line) { asio::write(sock, asio::buffer(line + "\n")); }
    // The next reply line, or null once the server closed the connection.
    std::optional<json> read() {
      std::optional<json> out;
      bool done = false;
      asio::async_read_until(sock, asio::dynamic_buffer(buf), '\n',
                             [&](asio::error_code ec, std::size_t n) {
                               if (!ec) {
                                 out = json::parse(buf.substr(0, n - 1));
                                 buf.erase(0, n);
                               }
                               done = true;
                             });
      EXPECT_TRUE(test.run_until([&] { return done; })) << "no reply";
      return out;
    }
    json ask(const json& request) {
      send(request.dump());
      auto r = read();
      EXPECT_TRUE(r) << "closed instead of answering " << request.dump();
      return r.value_or(json::object());
    }
    ControlServer& test;
    stream_protocol::socket sock;
    std::string buf;
  };

  // A local TCP connection to a mapping, echoing through the device.
  struct local_conn {
    local_conn(ControlServer& t, std::uint16_t port) : test(t), sock(t.io) {
      sock.connect({asio::ip::address_v4::loopback(), port});
      read();
    }
    void read() {
      sock.async_read_some(asio::buffer(chunk), [this](asio::error_code ec, std::size_t n) {
        if (ec) {
          end = ec;
          closed = true;
          return;
        }
        received.append(chunk.data(), n);
        read();
      });
    }
    bool echo(const std::string& text) {
      const auto want = received.size() + text.size();
      asio::write(sock, asio::buffer(text));
      return test.run_until([&] { return received.size() >= want || closed; }) &&
             received.substr(want - text.size()) == text;
    }
    ControlServer& test;
    tcp::socket sock;
    std::array<char, 4096> chunk{};
    std::string received;
    bool closed = false;
    asio::error_code end;
  };

  bool refuses(std::uint16_t port) {
    tcp::socket s(io);
    asio::error_code ec;
    s.connect({asio::ip::address_v4::loopback(), port}, ec);
    return ec == asio::error::connection_refused;
  }

  json mapping_named(peer& c, const std::string& name) {
    const auto listing = c.ask({{"op", "ls"}});  // named: the loop must not outlive it
    for (const auto& m : listing["mappings"])
      if (m["name"] == name) return m;
    return json();
  }

  std::filesystem::path dir, socket_path;
  quiet_events events;
  std::vector<std::unique_ptr<proxy>> proxies;
  std::vector<std::shared_ptr<std::optional<dial_outcome>>> runs;
  std::optional<control_server> control;
  int streams_opened = 0;
};

TEST_F(ControlServer, AddedMappingServesAtOnceAndCountsBytesLive) {
  start_proxy("srv:1");
  start_control();
  peer c(*this);
  auto added = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"name", "echo"}, {"id", 1}});
  ASSERT_EQ(added["ok"], true) << added.dump();
  EXPECT_EQ(added["id"], 1);
  EXPECT_EQ(added["mapping"]["name"], "echo");
  EXPECT_EQ(added["mapping"]["server"], "srv:1");
  EXPECT_EQ(events.listening_count, 1);
  const auto port = port_of(added["mapping"]["local"]);
  ASSERT_NE(port, 0);

  local_conn conn(*this, port);
  ASSERT_TRUE(conn.echo("hello"));
  ASSERT_TRUE(conn.echo(std::string(100000, 'x')));
  auto m = mapping_named(c, "echo");
  EXPECT_EQ(m["state"], "listening");
  EXPECT_EQ(m["connections"], 1);
  EXPECT_EQ(m["total"], 1);
  EXPECT_EQ(m["bytes_out"], 100005);
  EXPECT_EQ(m["bytes_in"], 100005);
  conn.sock.close();
  EXPECT_TRUE(run_until([&] { return mapping_named(c, "echo")["connections"] == 0; }));
}

TEST_F(ControlServer, RemoveDrainsOrCutsAndLeavesTheOthersAlone) {
  start_proxy("srv:1");
  start_control();
  peer c(*this);
  std::map<std::string, std::uint16_t> port;
  for (const char* name : {"gentle", "rough", "bystander"}) {
    auto r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"name", name}});
    ASSERT_EQ(r["ok"], true) << r.dump();
    port[name] = port_of(r["mapping"]["local"]);
  }
  local_conn gentle(*this, port["gentle"]), rough(*this, port["rough"]),
      bystander(*this, port["bystander"]);
  for (auto* conn : {&gentle, &rough, &bystander}) ASSERT_TRUE(conn->echo("up"));

  auto r = c.ask({{"op", "rm"}, {"mapping", "gentle"}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["mapping"]["connections"], 1);  // left to drain
  EXPECT_TRUE(refuses(port["gentle"]));
  EXPECT_TRUE(gentle.echo("still here"));
  EXPECT_EQ(proxies[0]->active_connections(), 3u);  // a draining one still counts

  r = c.ask(
      {{"op", "rm"}, {"mapping", "127.0.0.1:" + std::to_string(port["rough"])}, {"now", true}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_TRUE(run_until([&] { return rough.closed; }));
  EXPECT_EQ(rough.end, asio::error::connection_reset);
  EXPECT_TRUE(refuses(port["rough"]));

  EXPECT_TRUE(bystander.echo("untouched"));
  auto left = c.ask({{"op", "ls"}})["mappings"];
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0]["name"], "bystander");
  EXPECT_EQ(c.ask({{"op", "rm"}, {"mapping", "gentle"}})["error"], "not_found");

  // The name and the port are free again.
  r = c.ask(
      {{"op", "add"}, {"spec", std::to_string(port["gentle"]) + ":dev-1:7"}, {"name", "gentle"}});
  EXPECT_EQ(r["ok"], true) << r.dump();
  gentle.sock.close();
  EXPECT_TRUE(run_until([&] { return proxies[0]->active_connections() == 1; }));
}

TEST_F(ControlServer, RefusalsSayWhy) {
  start_proxy("srv:1");
  start_control();
  peer c(*this);
  auto first = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"name", "a"}});
  ASSERT_EQ(first["ok"], true);
  const std::string local = first["mapping"]["local"];

  auto r = c.ask({{"op", "add"}, {"spec", std::to_string(port_of(local)) + ":dev-1:7"}});
  EXPECT_EQ(r["error"], "in_use");
  EXPECT_EQ(r["message"], local + " is in use");
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"name", "a"}});
  EXPECT_EQ(r["error"], "duplicate_name");
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1"}});
  EXPECT_EQ(r["error"], "bad_spec");
  EXPECT_EQ(r["message"], "-L '0:dev-1': expected [BIND:]LPORT:DEVICE:DPORT");
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"name", "no spaces"}});
  EXPECT_EQ(r["error"], "bad_spec");

  // A check the server refuses leaves nothing behind: not the port, not the name.
  const auto before = streams_opened;
  r = c.ask({{"op", "add"}, {"spec", "0:dev-forbidden:22"}, {"name", "f"}, {"check", true}});
  EXPECT_EQ(r["error"], "check_failed");
  EXPECT_NE(r["message"].get<std::string>().find("forbidden"), std::string::npos) << r.dump();
  EXPECT_EQ(streams_opened, before + 1);
  EXPECT_EQ(c.ask({{"op", "ls"}})["mappings"].size(), 1u);
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"name", "f"}, {"check", true}});
  EXPECT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(streams_opened, before + 2);
}

TEST_F(ControlServer, MalformedLinesAreAnsweredAndTheConnectionGoesOn) {
  start_proxy("srv:1");
  start_control();
  peer c(*this);
  for (const char* bad :
       {"nonsense", "{\"op\":\"fly\"}", "{\"op\":\"add\",\"spec\":false}", "[]"}) {
    c.send(bad);
    auto r = c.read();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ((*r)["ok"], false);
    EXPECT_EQ((*r)["error"], "bad_request") << bad;
  }
  // Blank lines and CRLF endings are fine; requests in one write are answered in order.
  c.send("\r\n{\"op\":\"ls\",\"id\":1}\r\n\n{\"op\":\"info\",\"id\":2}");
  auto a = c.read(), b = c.read();
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)["id"], 1);
  EXPECT_EQ((*b)["id"], 2);
  EXPECT_EQ((*b)["servers"], json::array({"srv:1"}));
  EXPECT_EQ((*b)["pid"], ::getpid());
}

TEST_F(ControlServer, ALineOverTheBoundEndsOnlyItsConnection) {
  start_proxy("srv:1");
  start_control();
  peer other(*this);
  peer c(*this);
  // Exactly at the bound is still a request (an unknown field pads it).
  std::string at_bound = "{\"op\":\"ls\",\"pad\":\"\"}";
  at_bound.insert(at_bound.size() - 2, max_control_request - at_bound.size(), 'p');
  ASSERT_EQ(at_bound.size(), max_control_request);
  EXPECT_EQ(c.ask(json::parse(at_bound))["ok"], true);
  c.send(at_bound + " ");
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["error"], "bad_request");
  EXPECT_NE((*r)["message"].get<std::string>().find("longer than 65536 bytes"), std::string::npos);
  EXPECT_FALSE(c.read());
  EXPECT_EQ(other.ask({{"op", "ls"}})["ok"], true);
}

TEST_F(ControlServer, TooManyConnectionsAreToldToWait) {
  start_proxy("srv:1");
  control_server_options o;
  o.max_connections = 2;
  start_control(o);
  auto a = std::make_unique<peer>(*this);
  peer b(*this);
  EXPECT_EQ(a->ask({{"op", "ls"}})["ok"], true);
  EXPECT_EQ(b.ask({{"op", "ls"}})["ok"], true);
  peer c(*this);
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["error"], "busy");
  EXPECT_FALSE(c.read());
  a.reset();  // one leaves: room again
  ASSERT_TRUE(settle());
  peer d(*this);
  EXPECT_EQ(d.ask({{"op", "ls"}})["ok"], true);
}

TEST_F(ControlServer, IdleConnectionsAreClosed) {
  start_proxy("srv:1");
  control_server_options o;
  o.idle_timeout = 100ms;
  start_control(o);
  peer c(*this);
  EXPECT_EQ(c.ask({{"op", "ls"}})["ok"], true);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.read());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
}

TEST_F(ControlServer, SeveralProxiesShareOneSocketAndOneSetOfNames) {
  auto names = std::make_shared<mapping_names>();
  start_proxy("a:1", names);
  start_proxy("b:2", names);
  start_control();
  peer c(*this);
  auto r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}});
  EXPECT_EQ(r["error"], "unknown_server");
  EXPECT_NE(r["message"].get<std::string>().find("a:1, b:2"), std::string::npos);
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"server", "c:3"}});
  EXPECT_EQ(r["error"], "unknown_server");

  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"server", "a:1"}});
  EXPECT_EQ(r["mapping"]["name"], "dev-1:7");
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"server", "b:2"}});
  EXPECT_EQ(r["mapping"]["name"], "dev-1:7#2");  // unique across the proxies
  EXPECT_EQ(r["mapping"]["server"], "b:2");
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"server", "b:2"}, {"name", "dev-1:7"}});
  EXPECT_EQ(r["error"], "bad_spec");  // a chosen name never looks like a default one
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"server", "a:1"}, {"name", "x"}});
  ASSERT_EQ(r["ok"], true);
  r = c.ask({{"op", "add"}, {"spec", "0:dev-1:7"}, {"server", "b:2"}, {"name", "x"}});
  EXPECT_EQ(r["error"], "duplicate_name");

  auto all = c.ask({{"op", "ls"}})["mappings"];
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(proxies[0]->list().size(), 2u);
  EXPECT_EQ(proxies[1]->list().size(), 1u);
  r = c.ask({{"op", "rm"}, {"mapping", "dev-1:7#2"}});
  ASSERT_EQ(r["ok"], true);
  EXPECT_EQ(r["mapping"]["server"], "b:2");
  EXPECT_TRUE(proxies[1]->list().empty());
  EXPECT_EQ(c.ask({{"op", "info"}})["mappings"], 2);
}

TEST_F(ControlServer, SocketFileIsPrivateAndRemovedWithTheServer) {
  start_proxy("srv:1");
  start_control();
  struct stat st {};
  ASSERT_EQ(::lstat(socket_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  control.reset();
  EXPECT_FALSE(std::filesystem::exists(socket_path));

  // A file that replaced ours meanwhile is somebody else's: left alone.
  start_control();
  std::filesystem::remove(socket_path);
  { std::ofstream(socket_path) << "not ours"; }
  control.reset();
  EXPECT_TRUE(std::filesystem::exists(socket_path));
}

}  // namespace
}  // namespace tether::client
