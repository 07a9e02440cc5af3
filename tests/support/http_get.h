// Layer 1 of the test support (absl only): a minimal HTTP/1.0 client for
// the tests of /metrics and of a Prometheus server's query API, so they
// need no HTTP library. One request per connection; the whole response is
// read until the server closes.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace virtgate::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

// `method` `path` to "HOST:PORT" (IPv4 or a name), within `timeout`:
// DEADLINE_EXCEEDED past it, UNAVAILABLE if nothing listens.
absl::StatusOr<HttpResponse> HttpRequest(const std::string& host_port, const std::string& method,
                                         const std::string& path,
                                         absl::Duration timeout = absl::Seconds(10));
inline absl::StatusOr<HttpResponse> HttpGet(const std::string& host_port, const std::string& path,
                                            absl::Duration timeout = absl::Seconds(10)) {
  return HttpRequest(host_port, "GET", path, timeout);
}

// "a b&c" -> "a%20b%26c" (for query parameters).
std::string UrlEncode(const std::string& text);

}  // namespace virtgate::testing
