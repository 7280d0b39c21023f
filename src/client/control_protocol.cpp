#include "tether/client/control_protocol.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace tether::client {
namespace {

using json = nlohmann::ordered_json;

// Replies carry words that came from elsewhere (a server's refusal, a spec a user typed):
// text that is not UTF-8 is replaced rather than thrown on.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

struct bad_field {
  std::string message;
};

const json* field(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string string_field(const json& obj, const char* key, bool required) {
  const auto* v = field(obj, key);
  if (!v) {
    if (required) throw bad_field{std::string("missing field '") + key + "'"};
    return {};
  }
  if (!v->is_string()) throw bad_field{std::string("field '") + key + "' must be a string"};
  return v->get<std::string>();
}

bool bool_field(const json& obj, const char* key) {
  const auto* v = field(obj, key);
  if (!v) return false;
  if (!v->is_boolean()) throw bad_field{std::string("field '") + key + "' must be true or false"};
  return v->get<bool>();
}

std::uint64_t count_field(const json& obj, const char* key) {
  const auto* v = field(obj, key);
  if (!v) return 0;
  if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<std::int64_t>() >= 0))
    throw bad_field{std::string("field '") + key + "' must be a count"};
  return v->get<std::uint64_t>();
}

const char* op_name(control_op op) {
  switch (op) {
    case control_op::info:
      return "info";
    case control_op::ls:
      return "ls";
    case control_op::add:
      return "add";
    case control_op::rm:
      return "rm";
  }
  return "ls";
}

std::optional<control_op> op_from(std::string_view s) {
  if (s == "info") return control_op::info;
  if (s == "ls") return control_op::ls;
  if (s == "add") return control_op::add;
  if (s == "rm") return control_op::rm;
  return std::nullopt;
}

// The first part of what a peer sent, for a message back to it: enough to recognise.
std::string excerpt(std::string_view s) {
  return s.size() > 40 ? std::string(s.substr(0, 40)) + "..." : std::string(s);
}

json mapping_json(const mapping_status& m) {
  json j = {{"name", m.name},
            {"server", m.server},
            {"local", m.local},
            {"device", m.device},
            {"port", m.device_port},
            {"proto", mux::protocol_name(m.proto)},
            {"state", mapping_state_name(m.state)}};
  if (m.state == mapping_state::failed) j["error"] = m.error;
  j["connections"] = m.connections;
  if (m.proto == mux::protocol::tcp) j["total"] = m.total;
  j["bytes_out"] = m.bytes_out;
  j["bytes_in"] = m.bytes_in;
  if (m.proto == mux::protocol::udp) {
    j["datagrams_out"] = m.datagrams_out;
    j["datagrams_in"] = m.datagrams_in;
    j["dropped"] = m.dropped;
  }
  j["since"] = iso8601_utc(m.since);
  return j;
}

std::chrono::system_clock::time_point parse_iso8601(const std::string& s) {
  std::tm tm{};
  char z = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) != 7 ||
      z != 'Z')
    throw bad_field{"field 'since' is not an ISO-8601 UTC time"};
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

mapping_status mapping_from(const json& j) {
  if (!j.is_object()) throw bad_field{"a mapping is not an object"};
  mapping_status m;
  m.name = string_field(j, "name", true);
  m.server = string_field(j, "server", false);
  m.local = string_field(j, "local", true);
  m.device = string_field(j, "device", true);
  const auto port = count_field(j, "port");
  if (port > 65535) throw bad_field{"field 'port' out of range"};
  m.device_port = static_cast<std::uint16_t>(port);
  const auto proto = string_field(j, "proto", true);
  const auto p = mux::protocol_from_name(proto);
  if (!p) throw bad_field{"field 'proto' must be tcp or udp"};
  m.proto = *p;
  const auto state = string_field(j, "state", true);
  if (state == "listening")
    m.state = mapping_state::listening;
  else if (state == "session_down")
    m.state = mapping_state::session_down;
  else if (state == "failed")
    m.state = mapping_state::failed;
  else
    throw bad_field{"unknown state '" + excerpt(state) + "'"};
  m.error = string_field(j, "error", false);
  m.connections = count_field(j, "connections");
  m.total = count_field(j, "total");
  m.bytes_out = count_field(j, "bytes_out");
  m.bytes_in = count_field(j, "bytes_in");
  m.datagrams_out = count_field(j, "datagrams_out");
  m.datagrams_in = count_field(j, "datagrams_in");
  m.dropped = count_field(j, "dropped");
  m.since = parse_iso8601(string_field(j, "since", true));
  return m;
}

std::optional<control_errc> errc_from(std::string_view s) {
  for (int i = 1; i <= static_cast<int>(control_errc::forbidden); ++i) {
    const auto e = static_cast<control_errc>(i);
    if (s == control_errc_name(e)) return e;
  }
  return std::nullopt;
}

// "a:b" with a possibly bracketed host -> the port, or -1.
long port_of(std::string_view local) {
  const auto colon = local.rfind(':');
  if (colon == std::string_view::npos) return -1;
  long v = 0;
  const auto p = local.substr(colon + 1);
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  return ec == std::errc{} && end == p.data() + p.size() ? v : -1;
}

}  // namespace

const char* control_errc_name(control_errc e) noexcept {
  switch (e) {
    case control_errc::none:
      return "none";
    case control_errc::bad_request:
      return "bad_request";
    case control_errc::bad_spec:
      return "bad_spec";
    case control_errc::duplicate_name:
      return "duplicate_name";
    case control_errc::in_use:
      return "in_use";
    case control_errc::cannot_listen:
      return "cannot_listen";
    case control_errc::not_found:
      return "not_found";
    case control_errc::ambiguous:
      return "ambiguous";
    case control_errc::check_failed:
      return "check_failed";
    case control_errc::unknown_server:
      return "unknown_server";
    case control_errc::shutting_down:
      return "shutting_down";
    case control_errc::busy:
      return "busy";
    case control_errc::forbidden:
      return "forbidden";
  }
  return "bad_request";
}

const char* mapping_state_name(mapping_state s) noexcept {
  switch (s) {
    case mapping_state::listening:
      return "listening";
    case mapping_state::session_down:
      return "session_down";
    case mapping_state::failed:
      return "failed";
  }
  return "failed";
}

std::string iso8601_utc(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string format_mapping_json(const mapping_status& m) {
  return dump(mapping_json(m));
}

std::string format_mappings_json(const std::vector<mapping_status>& all) {
  json j = json::array();
  for (const auto& m : all) j.push_back(mapping_json(m));
  return dump(j);
}

// How deep arrays and objects nest in `line` (outside strings). Parsing is iterative, but
// printing a value back (the echoed "id") recurses once per level: a request may not nest
// deeper than a reply can be printed.
std::size_t nesting(std::string_view line) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : line) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    else if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return deepest;
}

constexpr std::size_t max_nesting = 64;

result<control_request> parse_control_request(std::string_view line) {
  if (nesting(line) > max_nesting)
    return error{"JSON nested deeper than " + std::to_string(max_nesting) + " levels"};
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    return error{"malformed JSON at byte " + std::to_string(e.byte)};
  }
  if (!j.is_object()) return error{"a request is a JSON object, like {\"op\":\"ls\"}"};
  control_request r;
  try {
    if (const auto* id = field(j, "id")) r.id = dump(*id);
    const auto op = string_field(j, "op", true);
    const auto known = op_from(op);
    if (!known) return error{"unknown op '" + excerpt(op) + "' (info, ls, add or rm)"};
    r.op = *known;
    if (r.op == control_op::add) {
      r.spec = string_field(j, "spec", true);
      const auto proto = string_field(j, "proto", false);
      // No "proto" means tcp.
      const auto p = proto.empty() ? mux::protocol::tcp : mux::protocol_from_name(proto);
      if (!p) return error{"field 'proto' must be \"tcp\" or \"udp\""};
      r.proto = *p;
      r.name = string_field(j, "name", false);
      r.check = bool_field(j, "check");
      r.server = string_field(j, "server", false);
    } else if (r.op == control_op::rm) {
      r.mapping = string_field(j, "mapping", true);
      r.now = bool_field(j, "now");
    }
  } catch (const bad_field& e) {
    return error{e.message};
  }
  return r;
}

std::string format_control_request(const control_request& r) {
  json j;
  if (!r.id.empty()) j["id"] = json::parse(r.id, nullptr, false);
  j["op"] = op_name(r.op);
  if (r.op == control_op::add) {
    j["spec"] = r.spec;
    j["proto"] = mux::protocol_name(r.proto);
    if (!r.name.empty()) j["name"] = r.name;
    if (r.check) j["check"] = true;
    if (!r.server.empty()) j["server"] = r.server;
  } else if (r.op == control_op::rm) {
    j["mapping"] = r.mapping;
    if (r.now) j["now"] = true;
  }
  return dump(j);
}

std::string format_control_reply(const control_reply& r) {
  json j;
  if (!r.id.empty()) {
    auto id = json::parse(r.id, nullptr, false);
    if (!id.is_discarded()) j["id"] = std::move(id);
  }
  if (r.failure) {
    j["ok"] = false;
    j["error"] = control_errc_name(r.failure.code);
    j["message"] = r.failure.message;
    return dump(j);
  }
  j["ok"] = true;
  if (r.info) {
    j["pid"] = r.info->pid;
    j["version"] = r.info->version;
    j["servers"] = r.info->servers;
    j["mappings"] = r.info->mappings;
  } else if (r.mapping) {
    j["mapping"] = mapping_json(*r.mapping);
  } else {
    j["mappings"] = json::array();
    for (const auto& m : r.mappings) j["mappings"].push_back(mapping_json(m));
  }
  return dump(j);
}

result<control_reply> parse_control_reply(std::string_view line) {
  if (nesting(line) > max_nesting)
    return error{"JSON nested deeper than " + std::to_string(max_nesting) + " levels"};
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    return error{"malformed JSON at byte " + std::to_string(e.byte)};
  }
  if (!j.is_object()) return error{"the reply is not a JSON object"};
  control_reply r;
  try {
    if (const auto* id = field(j, "id")) r.id = dump(*id);
    const auto* ok = field(j, "ok");
    if (!ok || !ok->is_boolean()) return error{"the reply has no \"ok\": true or false"};
    if (!ok->get<bool>()) {
      const auto code = string_field(j, "error", true);
      const auto known = errc_from(code);
      // An error this version does not know still fails, with the words the peer gave.
      r.failure.code = known.value_or(control_errc::bad_request);
      r.failure.message = string_field(j, "message", false);
      if (r.failure.message.empty()) r.failure.message = code;
      return r;
    }
    if (const auto* pid = field(j, "pid")) {
      control_info info;
      info.pid = pid->is_number_integer() ? pid->get<long>() : 0;
      info.version = string_field(j, "version", false);
      if (const auto* servers = field(j, "servers"); servers && servers->is_array())
        for (const auto& s : *servers)
          if (s.is_string()) info.servers.push_back(s.get<std::string>());
      info.mappings = count_field(j, "mappings");
      r.info = std::move(info);
    } else if (const auto* m = field(j, "mapping")) {
      r.mapping = mapping_from(*m);
    } else if (const auto* ms = field(j, "mappings")) {
      if (!ms->is_array()) return error{"field 'mappings' must be an array"};
      for (const auto& each : *ms) r.mappings.push_back(mapping_from(each));
    }
  } catch (const bad_field& e) {
    return error{e.message};
  } catch (const json::exception&) {  // a number out of range for its type
    return error{"unexpected value in the reply"};
  }
  return r;
}

resolved_mapping resolve_mapping(const std::vector<mapping_status>& all, std::string_view which) {
  resolved_mapping r;
  const auto found = [&](const mapping_status& m) {
    r.name = m.name;
    r.server = m.server;
    return r;
  };
  for (const auto& m : all)
    if (m.name == which) return found(m);
  for (const auto& m : all)
    if (m.local == which) return found(m);
  const bool bare_port =
      !which.empty() && which.size() <= 5 &&
      std::all_of(which.begin(), which.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (bare_port) {
    const long port = std::stol(std::string(which));
    std::vector<const mapping_status*> matches;
    for (const auto& m : all)
      if (port_of(m.local) == port) matches.push_back(&m);
    if (matches.size() == 1) return found(*matches.front());
    if (matches.size() > 1) {
      std::string locals;
      for (const auto* m : matches)
        locals += (locals.empty() ? "" : ", ") + m->local + " (" + m->name + ")";
      r.failure = {control_errc::ambiguous, "several mappings listen on port " +
                                                std::string(which) + ": " + locals +
                                                "; give a name or the whole address"};
      return r;
    }
  }
  r.failure = {control_errc::not_found,
               "no mapping named or listening on '" + excerpt(which) + "' (see tether map ls)"};
  return r;
}

}  // namespace tether::client
