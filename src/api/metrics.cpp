// GET /metrics: the Prometheus text format (version 0.0.4). Labels only where their values
// are bounded: statuses, reasons and HTTP codes, never devices or streams.
#include "tether/api/metrics.hpp"

#include "tether/api/service.hpp"

namespace tether::api {
namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* name, std::uint64_t value, const std::string& labels = {}) {
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += ' ' + std::to_string(value) + '\n';
}

}  // namespace

std::string server_metrics_text(const server::server_counters& c) {
  std::string out;
  auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    family(out, name, "counter", help);
    sample(out, name, v);
  };
  counter("tether_connections_refused_total", "Connections closed at accept by a limit.",
          c.connections_refused);
  counter("tether_sessions_accepted_total", "Tunnel sessions authenticated and accepted.",
          c.sessions_accepted);
  counter("tether_sessions_refused_total", "Tunnel sessions refused (bad token, limits).",
          c.sessions_refused);
  counter("tether_limit_refusals_total", "Sessions and streams refused by a limit.",
          c.limit_refusals);
  auto gauge = [&](const char* name, const char* help, std::uint64_t v) {
    family(out, name, "gauge", help);
    sample(out, name, v);
  };
  gauge("tether_sessions_open", "Tunnel sessions open now (clients and agents).", c.sessions_open);
  gauge("tether_agents_online", "Agent devices whose agent is connected now.", c.agents_online);
  // Labelled by protocol and by reason: both sets are fixed, whatever peers send.
  family(out, "tether_streams_opened_total", "counter", "Tunnel streams opened, by protocol.");
  for (std::size_t p = 0; p < mux::protocol_count; ++p)
    sample(out, "tether_streams_opened_total", c.streams_opened_by_proto[p],
           std::string("proto=\"") + mux::protocol_name(static_cast<mux::protocol>(p)) + "\"");
  family(out, "tether_streams_open", "gauge", "Tunnel streams open now, by protocol.");
  for (std::size_t p = 0; p < mux::protocol_count; ++p)
    sample(out, "tether_streams_open", c.streams_open_by_proto[p],
           std::string("proto=\"") + mux::protocol_name(static_cast<mux::protocol>(p)) + "\"");
  const auto by_reason = [&](const char* name, const char* help,
                             const std::array<std::uint64_t, errc_count>& counts) {
    family(out, name, "counter", help);
    for (std::size_t r = 1; r < errc_count; ++r)  // 0 is ok
      if (counts[r] != 0)
        sample(out, name, counts[r],
               std::string("reason=\"") + errc_name(static_cast<errc>(r)) + "\"");
  };
  by_reason("tether_streams_refused_total", "Tunnel streams refused, by reason.",
            c.streams_refused_by_reason);
  by_reason("tether_stream_errors_total",
            "Tunnel streams that ended with an error, by reason (internal: the device socket's).",
            c.stream_errors_by_reason);
  family(out, "tether_device_bytes_total", "counter", "Bytes relayed to and from devices.");
  sample(out, "tether_device_bytes_total", c.bytes_to_devices, "direction=\"to_device\"");
  sample(out, "tether_device_bytes_total", c.bytes_from_devices, "direction=\"from_device\"");
  family(out, "tether_udp_datagrams_dropped_total", "counter",
         "UDP datagrams dropped by ended flows, by reason.");
  for (std::size_t r = 0; r < relay::drop_reason_count; ++r)
    sample(out, "tether_udp_datagrams_dropped_total", c.datagrams.dropped[r],
           std::string("reason=\"") + relay::describe(static_cast<relay::drop_reason>(r)) + "\"");
  return out;
}

std::string api_metrics_text(const api_counters& c, std::size_t subscribers) {
  std::string out;
  family(out, "tether_api_messages_total", "counter",
         "Messages sent through the API and webhooks, by status.");
  for (auto s : {server::message_status::delivered, server::message_status::refused,
                 server::message_status::unreachable, server::message_status::offline,
                 server::message_status::timed_out, server::message_status::forbidden,
                 server::message_status::unknown_device, server::message_status::failed}) {
    const auto it = c.messages_by_status.find(server::to_string(s));
    sample(out, "tether_api_messages_total", it == c.messages_by_status.end() ? 0 : it->second,
           std::string("status=\"") + server::to_string(s) + "\"");
  }
  family(out, "tether_api_webhook_requests_total", "counter",
         "Requests to webhook URLs that named a live webhook, by outcome.");
  for (const auto& [status, n] : c.webhooks_by_status)
    sample(out, "tether_api_webhook_requests_total", n, "status=\"" + status + "\"");
  family(out, "tether_api_responses_total", "counter", "API responses, by HTTP status code.");
  for (const auto& [code, n] : c.responses_by_code)
    sample(out, "tether_api_responses_total", n, "code=\"" + std::to_string(code) + "\"");
  family(out, "tether_api_reply_bytes_total", "counter", "Bytes of device replies stored.");
  sample(out, "tether_api_reply_bytes_total", c.reply_bytes);
  family(out, "tether_api_stream_subscribers", "gauge", "Live message feeds open now.");
  sample(out, "tether_api_stream_subscribers", subscribers);
  return out;
}

}  // namespace tether::api
