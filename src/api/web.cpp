#include "web.hpp"

namespace tether::api {
namespace {

// Scripts, styles, images and connections from this origin only, and no inline script or
// style at all: data from devices that reaches the page can never run as code there.
constexpr std::string_view content_security_policy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

}  // namespace

std::optional<http_answer> web_answer(std::string_view path) {
  if (path == "/" || path.empty()) path = "/index.html";
  for (const auto& f : web_files()) {
    if (f.path != path) continue;
    http_answer a;
    a.response.status = 200;
    a.response.content_type = std::string(f.content_type);
    a.response.body = std::string(f.body);
    auto& h = a.response.headers;
    h.emplace_back("Content-Security-Policy", std::string(content_security_policy));
    h.emplace_back("X-Content-Type-Options", "nosniff");
    h.emplace_back("X-Frame-Options", "DENY");
    h.emplace_back("Referrer-Policy", "no-referrer");
    h.emplace_back("Cache-Control", "no-cache");
    return a;
  }
  return std::nullopt;
}

}  // namespace tether::api
