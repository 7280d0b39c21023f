#include "output.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include "tether/printable.hpp"

namespace tether::cli {

std::string log_level_problem(const std::string& level) {
  if (spdlog::level::from_str(level) != spdlog::level::off || level == "off") return {};
  return "unknown log level '" + printable(level) +
         "' (use trace, debug, info, warn, error or off)";
}

void setup_logging(const std::string& level) {
  if (auto problem = log_level_problem(level); !problem.empty())
    throw std::invalid_argument(problem);
  const auto lvl = spdlog::level::from_str(level);
  // NO_COLOR (no-color.org): any non-empty value turns colours off.
  const char* no_color = std::getenv("NO_COLOR");
  auto logger = spdlog::stderr_color_mt(
      "tether", no_color && *no_color ? spdlog::color_mode::never : spdlog::color_mode::automatic);
  // UTC, and said so: log lines from machines in different zones sort together.
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[32];
  const auto n = std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
  return std::string(out, n) + "." + std::to_string(1000 + ms.count()).substr(1) + "Z";
}

namespace {
std::ostream* event_stream = &std::cout;
}  // namespace

void print_events_on_stderr() {
  event_stream = &std::cerr;
}

void report_error(bool json, int code, std::string_view reason, const std::string& message) {
  std::cerr << "error: " << message << std::endl;
  if (json)
    print_event(true,
                {{"event", "error"}, {"code", code}, {"reason", reason}, {"message", message}},
                message);
}

void print_event(bool json, const nlohmann::ordered_json& event, const std::string& text) {
  if (!json) {
    *event_stream << text << std::endl;
    return;
  }
  // Every event says when it happened, right after what it is.
  nlohmann::ordered_json stamped;
  for (auto it = event.begin(); it != event.end(); ++it) {
    stamped[it.key()] = it.value();
    if (it.key() == "event") stamped["time"] = utc_timestamp();
  }
  *event_stream << stamped.dump() << std::endl;
}

void event_printer::listening(const client::mapping& m, const std::string& name,
                              const std::string& local) {
  // A default name only repeats the target: the text line shows names people chose.
  const bool chosen = name.find(':') == std::string::npos;
  if (m.socks) {
    print_event(json_,
                {{"event", "listening"},
                 {"name", name},
                 {"proto", "socks5"},
                 {"local", local},
                 {"server", server_}},
                "listening " + local + " socks5 -> any device" +
                    (chosen ? " (" + name + ")" : std::string()));
    return;
  }
  print_event(json_,
              {{"event", "listening"},
               {"name", name},
               {"proto", mux::protocol_name(m.proto)},
               {"local", local},
               {"device", m.device},
               {"port", m.device_port},
               {"server", server_}},
              "listening " + local + " -> " + m.device + ":" + std::to_string(m.device_port) +
                  " " + mux::protocol_name(m.proto) +
                  (chosen ? " (" + name + ")" : std::string()));
}

void event_printer::connected(const std::string& server) {
  print_event(json_, {{"event", "connected"}, {"server", server}}, "connected to " + server);
  connected_ = true;
  // A reconnection makes the listeners usable again, as the first session did.
  if (ready_pending_ || mappings_) ready();
}

void event_printer::connecting() {
  print_event(json_, {{"event", "connecting"}, {"server", server_}}, "connecting to " + server_);
}

void event_printer::ready_when_connected(std::function<std::size_t()> mappings,
                                         std::function<void()> then) {
  mappings_ = std::move(mappings);
  ready_pending_ = true;
  on_ready_ = std::move(then);
  if (connected_) ready();
}

void event_printer::ready() {
  ready_pending_ = false;
  const auto n = mappings_();
  print_event(
      json_, {{"event", "ready"}, {"server", server_}, {"mappings", n}},
      "ready: " + std::to_string(n) + (n == 1 ? " mapping" : " mappings") + " through " + server_);
  if (auto then = std::exchange(on_ready_, nullptr)) then();
}

void event_printer::disconnected(const std::string& reason, std::chrono::milliseconds retry_in) {
  print_event(json_,
              {{"event", "disconnected"},
               {"server", server_},
               {"reason", reason},
               {"retry_in_ms", retry_in.count()}},
              "disconnected from " + server_ + ": " + reason + "; retrying in " +
                  std::to_string(retry_in.count()) + " ms");
}

void event_printer::going_away(std::size_t continuing) {
  print_event(json_,
              {{"event", "disconnected"},
               {"server", server_},
               {"reason", "going away"},
               {"retry_in_ms", 0},
               {"continuing_streams", continuing}},
              "disconnected from " + server_ + ": going away (the server is stopping); " +
                  std::to_string(continuing) +
                  (continuing == 1 ? " open stream continues until it ends"
                                   : " open streams continue until they end") +
                  "; reconnecting now");
}

void event_printer::stream_error(const client::mapping& m, const std::string& local, errc reason,
                                 const std::string& message) {
  print_event(
      json_,
      {{"event", "stream_error"},
       {"server", server_},
       {"local", local},
       {"device", m.device},
       {"port", m.device_port},
       {"reason", errc_name(reason)},
       {"message", message}},
      "stream to " + m.device + ":" + std::to_string(m.device_port) + " failed: " + message);
}

}  // namespace tether::cli
