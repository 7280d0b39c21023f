#pragma once
// The dashboard (src/api/web/): plain HTML, CSS and JavaScript compiled into the binary
// (web_files.cpp is generated from the files by cmake/embed_web.cmake), served by the API's
// listener at / with a strict Content-Security-Policy.

#include <optional>
#include <span>
#include <string_view>

#include "tether/api/http.hpp"

namespace tether::api {

struct web_file {
  std::string_view path;  // "/dashboard.js"
  std::string_view content_type;
  std::string_view body;
};

/// Every file of the dashboard (generated).
std::span<const web_file> web_files();

/// The file at `path` ("/" is /index.html) with its security headers, or nothing.
std::optional<http_answer> web_answer(std::string_view path);

}  // namespace tether::api
