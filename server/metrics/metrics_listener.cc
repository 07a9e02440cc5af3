#include "server/metrics/metrics_listener.h"

#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"
#include "server/metrics/exposition.h"

namespace virtgate {
namespace {

constexpr unsigned int kMaxConnections = 64;
constexpr unsigned int kConnectionTimeoutSeconds = 10;

void LogFromMhd(void*, const char* format, va_list args) {
  char buffer[512];
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  std::string line(buffer);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  LogWarning("metrics listener: ", line);
}

void FreeBody(void* body) { delete static_cast<std::string*>(body); }

MHD_Result Respond(MHD_Connection* connection, unsigned int status, std::string body,
                   absl::string_view content_type, bool allow_header = false) {
  // The response owns the text (a scrape of 10,000 domains is a megabyte):
  // no copy, freed by libmicrohttpd once sent.
  auto* owned = new std::string(std::move(body));
  MHD_Response* response = MHD_create_response_from_buffer_with_free_callback_cls(
      owned->size(), owned->data(), &FreeBody, owned);
  if (response == nullptr) {
    delete owned;
    return MHD_NO;
  }
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                          std::string(content_type).c_str());
  if (allow_header) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  const MHD_Result result = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return result;
}

MHD_Result Handle(void* cls, MHD_Connection* connection, const char* url, const char* method,
                  const char*, const char*, size_t*, void**) {
  const auto* source = static_cast<const MetricsSource*>(cls);
  const absl::string_view m(method);
  if (m != MHD_HTTP_METHOD_GET && m != MHD_HTTP_METHOD_HEAD) {
    return Respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n", "text/plain",
                   /*allow_header=*/true);
  }
  const absl::string_view path(url);
  if (path == "/metrics") {
    return Respond(connection, MHD_HTTP_OK, source->Scrape(), Exposition::kContentType);
  }
  if (path == "/") {
    return Respond(connection, MHD_HTTP_OK,
                   "virtgated: Prometheus metrics are at /metrics\n", "text/plain");
  }
  return Respond(connection, MHD_HTTP_NOT_FOUND, "not found: metrics are at /metrics\n",
                 "text/plain");
}

// A listening TCP socket of our own on `address`, so a port in use or a
// host that does not resolve is reported in our words, and no SO_REUSEPORT
// lets a second server share the port.
absl::StatusOr<int> Bind(const ListenAddress& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = absl::StrCat(address.port);
  if (const int e = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &found); e != 0) {
    return absl::InvalidArgumentError(absl::StrCat(address.flag, "=", address.text,
                                                   ": cannot resolve ", address.host, ": ",
                                                   gai_strerror(e)));
  }
  std::string error = "no address";
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
      error = std::strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat(address.flag, "=", address.text, ": cannot listen: ", error));
  }
  return fd;
}

// The port `fd` is bound to (port 0 picked one).
int BoundPort(int fd, int asked) {
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return asked;
  if (bound.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (bound.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  }
  return asked;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsListener>> MetricsListener::Start(
    const ListenAddress& address, std::shared_ptr<const MetricsSource> source) {
  absl::StatusOr<int> fd = Bind(address);
  if (!fd.ok()) return fd.status();
  // libmicrohttpd owns (and closes) the socket it is given, on success and,
  // in some versions, on failure too: it gets a copy, ours is closed here.
  const int given = fcntl(*fd, F_DUPFD_CLOEXEC, 0);
  close(*fd);
  if (given < 0) return absl::InternalError(absl::StrCat("dup: ", std::strerror(errno)));
  std::unique_ptr<MetricsListener> listener(new MetricsListener(std::move(source)));
  listener->daemon_ = MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, nullptr, nullptr, &Handle,
      const_cast<MetricsSource*>(listener->source_.get()), MHD_OPTION_EXTERNAL_LOGGER,
      &LogFromMhd, nullptr, MHD_OPTION_LISTEN_SOCKET, given, MHD_OPTION_CONNECTION_LIMIT,
      kMaxConnections, MHD_OPTION_CONNECTION_TIMEOUT, kConnectionTimeoutSeconds, MHD_OPTION_END);
  if (listener->daemon_ == nullptr) {
    return absl::InternalError(
        absl::StrCat(address.flag, "=", address.text, ": libmicrohttpd did not start"));
  }
  listener->port_ = BoundPort(given, address.port);
  const bool v6 = address.host.find(':') != std::string::npos;
  listener->address_ = v6 ? absl::StrCat("[", address.host, "]:", listener->port_)
                          : absl::StrCat(address.host, ":", listener->port_);
  return listener;
}

void MetricsListener::Shutdown() {
  if (daemon_ == nullptr) return;
  MHD_stop_daemon(daemon_);  // closes the listening socket too
  daemon_ = nullptr;
}

MetricsListener::~MetricsListener() { Shutdown(); }

}  // namespace virtgate
