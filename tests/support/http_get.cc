#include "tests/support/http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace virtgate::testing {
namespace {

// Waits until `fd` is ready for `events` or `deadline`.
bool WaitReady(int fd, short events, absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  if (ms <= 0) return false;
  pollfd p{fd, events, 0};
  return poll(&p, 1, static_cast<int>(ms)) == 1;
}

absl::StatusOr<HttpResponse> Parse(const std::string& raw) {
  const size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return absl::DataLossError(absl::StrCat("no header end: ", raw));
  std::vector<std::string> lines = absl::StrSplit(raw.substr(0, end), "\r\n");
  HttpResponse response;
  std::vector<std::string> status = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (status.size() < 2 || !absl::SimpleAtoi(status[1], &response.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", lines[0]));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    response.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  response.body = raw.substr(end + 4);
  return response;
}

}  // namespace

std::string UrlEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

absl::StatusOr<HttpResponse> HttpRequest(const std::string& host_port, const std::string& method,
                                         const std::string& path, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("want HOST:PORT");
  const std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", host_port));
  }
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(found);
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  const int rc = connect(fd, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  auto fail = [fd](absl::Status status) {
    close(fd);
    return status;
  };
  if (rc != 0 && errno != EINPROGRESS) {
    return fail(absl::UnavailableError(absl::StrCat("connect ", host_port, ": ",
                                                    std::strerror(errno))));
  }
  if (!WaitReady(fd, POLLOUT, deadline)) {
    return fail(absl::DeadlineExceededError(absl::StrCat("connect ", host_port)));
  }
  int error = 0;
  socklen_t length = sizeof(error);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
  if (error != 0) {
    return fail(absl::UnavailableError(absl::StrCat("connect ", host_port, ": ",
                                                    std::strerror(error))));
  }
  const std::string request = absl::StrCat(method, " ", path, " HTTP/1.0\r\nHost: ", host_port,
                                            "\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    if (!WaitReady(fd, POLLOUT, deadline)) return fail(absl::DeadlineExceededError("send"));
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return fail(absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno))));
    }
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buffer[65536];
  while (true) {
    if (!WaitReady(fd, POLLIN, deadline)) {
      return fail(absl::DeadlineExceededError(
          absl::StrCat(method, " ", path, " on ", host_port, ": no complete answer within ",
                       absl::FormatDuration(timeout))));
    }
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return fail(absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno))));
    }
    raw.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return Parse(raw);
}

}  // namespace virtgate::testing
