#include "tether/api/client.hpp"

#include <curl/curl.h>
#include <dlfcn.h>

#include <memory>
#include <string>

namespace tether::api {
namespace {

// libcurl is loaded when the first request is made, not linked: only `tether send`,
// `webhook` and `messages` need it, and with its dependencies (GnuTLS, Kerberos, LDAP, SASL,
// librtmp... about 30 libraries, ~3 MiB of each process's RSS) it would otherwise be mapped
// into every `tether server`, `connect` and `agent` too.
struct libcurl {
  CURLcode (*global_init)(long flags) = nullptr;
  CURL* (*easy_init)() = nullptr;
  void (*easy_cleanup)(CURL*) = nullptr;
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...) = nullptr;
  CURLcode (*easy_perform)(CURL*) = nullptr;
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...) = nullptr;
  const char* (*easy_strerror)(CURLcode) = nullptr;
  curl_slist* (*slist_append)(curl_slist*, const char*) = nullptr;
  void (*slist_free_all)(curl_slist*) = nullptr;
  std::string error;  // why it could not be loaded; empty when it was
};

template <class F>
bool load_symbol(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(::dlsym(lib, name));
  return f != nullptr;
}

const libcurl& load_libcurl() {
  static const libcurl curl = [] {
    libcurl c;
    void* lib = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      c.error = std::string("the API client needs libcurl (Debian: libcurl4): ") + ::dlerror();
      return c;
    }
    const bool all = load_symbol(lib, "curl_global_init", c.global_init) &&
                     load_symbol(lib, "curl_easy_init", c.easy_init) &&
                     load_symbol(lib, "curl_easy_cleanup", c.easy_cleanup) &&
                     load_symbol(lib, "curl_easy_setopt", c.easy_setopt) &&
                     load_symbol(lib, "curl_easy_perform", c.easy_perform) &&
                     load_symbol(lib, "curl_easy_getinfo", c.easy_getinfo) &&
                     load_symbol(lib, "curl_easy_strerror", c.easy_strerror) &&
                     load_symbol(lib, "curl_slist_append", c.slist_append) &&
                     load_symbol(lib, "curl_slist_free_all", c.slist_free_all);
    if (!all) {
      c.error = "the libcurl found lacks a function the API client uses";
      return c;
    }
    c.global_init(CURL_GLOBAL_DEFAULT);
    return c;
  }();
  return curl;
}

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
  client_response r;
  const libcurl& curl = load_libcurl();
  if (!curl.error.empty()) {
    r.error = curl.error;
    return r;
  }
  std::unique_ptr<CURL, void (*)(CURL*)> h(curl.easy_init(), curl.easy_cleanup);
  if (!h) {
    r.error = "cannot start an HTTP request";
    return r;
  }
  CURL* c = h.get();
  const std::string url = o.url + std::string(path);
  const std::string verb(method);
  curl.easy_setopt(c, CURLOPT_URL, url.c_str());
  curl.easy_setopt(c, CURLOPT_CUSTOMREQUEST, verb.c_str());
  curl.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  if (!streaming) curl.easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(o.timeout.count()));
  if (!o.ca_file.empty()) curl.easy_setopt(c, CURLOPT_CAINFO, o.ca_file.c_str());
  curl_slist* headers = nullptr;
  const std::string auth = "Authorization: Bearer " + o.key;
  if (!o.key.empty()) headers = curl.slist_append(headers, auth.c_str());
  const std::string type = "Content-Type: " + std::string(content_type);
  if (!body.empty()) {
    headers = curl.slist_append(headers, type.c_str());
    curl.easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl.easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_list(headers, curl.slist_free_all);
  curl.easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl.easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body);
  curl.easy_setopt(c, CURLOPT_WRITEDATA, &out);
  const CURLcode rc = curl.easy_perform(c);
  curl.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && streaming)) r.error = curl.easy_strerror(rc);
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
