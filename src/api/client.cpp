#include "tether/api/client.hpp"

#include <curl/curl.h>

#include <memory>
#include <mutex>

namespace tether::api {
namespace {

struct sink {
  std::string* body = nullptr;
  const std::function<bool(std::string_view)>* on_data = nullptr;
  std::size_t limit = 64 * 1024 * 1024;  // an answer larger than this is not ours
};

std::size_t write_body(char* p, std::size_t size, std::size_t n, void* user) {
  auto& s = *static_cast<sink*>(user);
  const std::size_t bytes = size * n;
  if (s.on_data) return (*s.on_data)(std::string_view(p, bytes)) ? bytes : 0;
  if (s.body->size() + bytes > s.limit) return 0;
  s.body->append(p, bytes);
  return bytes;
}

client_response perform(const client_options& o, std::string_view method, std::string_view path,
                        std::string_view body, std::string_view content_type, sink& out,
                        bool streaming) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  client_response r;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> h(curl_easy_init(), curl_easy_cleanup);
  if (!h) {
    r.error = "cannot start an HTTP request";
    return r;
  }
  CURL* c = h.get();
  const std::string url = o.url + std::string(path);
  const std::string verb(method);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, verb.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  if (!streaming) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(o.timeout.count()));
  if (!o.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, o.ca_file.c_str());
  curl_slist* headers = nullptr;
  const std::string auth = "Authorization: Bearer " + o.key;
  if (!o.key.empty()) headers = curl_slist_append(headers, auth.c_str());
  const std::string type = "Content-Type: " + std::string(content_type);
  if (!body.empty()) {
    headers = curl_slist_append(headers, type.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers,
                                                                           curl_slist_free_all);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
  const CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && streaming)) r.error = curl_easy_strerror(rc);
  return r;
}

}  // namespace

client_response call(const client_options& o, std::string_view method, std::string_view path,
                     std::string_view body, std::string_view content_type) {
  std::string received;
  sink s;
  s.body = &received;
  auto r = perform(o, method, path, body, content_type, s, false);
  r.body = std::move(received);
  return r;
}

client_response follow(const client_options& o, std::string_view path,
                       const std::function<bool(std::string_view)>& on_data) {
  sink s;
  s.on_data = &on_data;
  return perform(o, "GET", path, {}, {}, s, true);
}

}  // namespace tether::api
