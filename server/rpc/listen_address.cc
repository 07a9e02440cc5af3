#include "server/rpc/listen_address.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace virtgate {
namespace {

constexpr char kForms[] = "want HOST:PORT, [IPV6]:PORT or unix:/ABSOLUTE/PATH";

absl::Status Bad(const std::string& flag, const std::string& text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " \"", absl::CEscape(text), "\": ", why));
}

// What is wrong with the directory a unix socket goes in, or "".
std::string SocketDirectoryProblem(const std::string& path) {
  const std::string dir = path.substr(0, path.rfind('/'));
  if (dir.empty()) return "";  // "/" itself
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::StrCat("directory ", dir, " does not exist; create it first (mkdir -p ", dir,
                          "; systemd's RuntimeDirectory= makes /run/virtgate for the unit)");
    }
    return absl::StrCat("directory ", dir, ": ", std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return absl::StrCat(dir, " is not a directory");
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    return absl::StrCat("directory ", dir, ": ", std::strerror(errno));
  }
  return "";
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

absl::StatusOr<ListenAddress> ParseUnix(const std::string& text, const std::string& flag) {
  ListenAddress a;
  a.flag = flag;
  a.text = text;
  a.unix_socket = true;
  a.loopback = true;
  a.path = text.substr(5);
  if (a.path.empty() || a.path[0] != '/') {
    return Bad(flag, text, "a unix socket needs an absolute path (unix:/run/virtgate/virtgate.sock)");
  }
  if (a.path.find_first_of(std::string("\0%?#", 4)) != std::string::npos) {
    // gRPC reads the target as a URI: these would name another file.
    return Bad(flag, text, "the path contains a NUL byte, '%', '?' or '#'");
  }
  if (a.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Bad(flag, text, absl::StrCat("a unix socket path is at most ",
                                  sizeof(sockaddr_un{}.sun_path) - 1, " bytes"));
  }
  return a;
}

// A socket address for a bind of our own; false if the host does not resolve.
bool Resolve(const ListenAddress& a, sockaddr_storage* out, socklen_t* len, std::string* why) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &found);
  if (rc != 0 || found == nullptr) {
    *why = absl::StrCat("cannot resolve ", a.host, ": ", gai_strerror(rc));
    return false;
  }
  std::memcpy(out, found->ai_addr, found->ai_addrlen);
  *len = found->ai_addrlen;
  freeaddrinfo(found);
  return true;
}

}  // namespace

absl::StatusOr<ListenAddress> ParseListenAddress(const std::string& text,
                                                 const std::string& flag) {
  if (absl::StartsWith(text, "unix:")) return ParseUnix(text, flag);
  if (text.empty()) return Bad(flag, text, kForms);
  ListenAddress a;
  a.flag = flag;
  a.text = text;
  std::string port;
  if (text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Bad(flag, text, kForms);
    }
    a.host = text.substr(1, close - 1);
    in6_addr v6;
    if (inet_pton(AF_INET6, a.host.c_str(), &v6) != 1) {
      return Bad(flag, text, absl::StrCat("\"", absl::CEscape(a.host), "\" is not an IPv6 address"));
    }
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return Bad(flag, text, kForms);
    a.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (a.host.empty()) return Bad(flag, text, "no host (0.0.0.0 or [::] for every address)");
    if (a.host.find(':') != std::string::npos) {
      return Bad(flag, text, "an IPv6 address goes in brackets: [::1]:50051");
    }
    for (char c : a.host) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' &&
          c != '_') {
        return Bad(flag, text, absl::StrCat("\"", absl::CEscape(a.host), "\" is not a host name or address"));
      }
    }
  }
  if (port.empty() || !std::all_of(port.begin(), port.end(),
                                   [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); }) ||
      !absl::SimpleAtoi(port, &a.port) || a.port > 65535) {
    return Bad(flag, text, absl::StrCat("port \"", absl::CEscape(port),
                                  "\" is not a number from 0 to 65535 (0: any free port)"));
  }
  a.loopback = IsLoopbackHost(a.host);
  return a;
}

absl::StatusOr<int> PrepareListener(const ListenAddress& a) {
  if (!a.unix_socket) return -1;
  if (std::string why = SocketDirectoryProblem(a.path); !why.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(a.flag, ": cannot listen on ", a.text, ": ", why));
  }
  const std::string lock_path = a.path + ".lock";
  const int lock = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock < 0) {
    return absl::FailedPreconditionError(absl::StrCat(a.flag, ": cannot listen on ", a.text, ": ",
                                                      lock_path, ": ", std::strerror(errno)));
  }
  if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
    close(lock);
    return absl::FailedPreconditionError(absl::StrCat(
        a.flag, ": refusing to listen on ", a.text,
        ": another server is listening there (it holds ", lock_path, ")"));
  }
  auto refuse = [&](const std::string& why) {
    close(lock);
    return absl::FailedPreconditionError(
        absl::StrCat(a.flag, ": refusing to listen on ", a.text, ": ", why));
  };
  struct stat st {};
  if (lstat(a.path.c_str(), &st) != 0) {
    if (errno == ENOENT) return lock;
    return refuse(std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) return refuse("it is a symbolic link; give the real path");
  if (!S_ISSOCK(st.st_mode)) return refuse("a file that is not a socket is in the way");
  // A socket: live (another server answers, or its backlog is full) or left
  // by one that died (refused). Never blocks on a wedged server.
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return refuse(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, a.path.data(), a.path.size());
  const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int connect_errno = errno;
  close(fd);
  if (rc == 0 || connect_errno == EAGAIN || connect_errno == EINPROGRESS) {
    return refuse("another server is listening there");
  }
  if (connect_errno == ENOENT) return lock;  // gone meanwhile
  if (connect_errno != ECONNREFUSED) return refuse(std::strerror(connect_errno));
  if (unlink(a.path.c_str()) != 0 && errno != ENOENT) {
    return refuse(absl::StrCat("cannot remove the stale socket: ", std::strerror(errno)));
  }
  return lock;
}

std::string DiagnoseListenFailure(const ListenAddress& a) {
  if (a.unix_socket) {
    std::string why = SocketDirectoryProblem(a.path);
    return why.empty() ? "gRPC could not bind it" : why;
  }
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string why;
  if (!Resolve(a, &addr, &len, &why)) return why;
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::strerror(errno);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as gRPC does
  why = bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0
            ? "gRPC could not bind it (a bind of our own just worked)"
            : (errno == EADDRINUSE ? "address in use" : std::strerror(errno));
  close(fd);
  return why;
}

absl::StatusOr<Listening> StartListening(const ListenAddress& address,
                                         std::shared_ptr<grpc::ServerCredentials> credentials,
                                         grpc::ServerBuilder* builder) {
  absl::StatusOr<int> lock = PrepareListener(address);
  if (!lock.ok()) return lock.status();
  Listening listening;
  listening.lock_fd = *lock;
  builder->AddListeningPort(address.text, std::move(credentials), &listening.port);
  // A port another process listens on is an error, not shared between the
  // two (gRPC's default, SO_REUSEPORT, would split calls between them).
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // A unix socket is created mode 0660 (owner and group may connect) from
  // the start: the umask applies while gRPC binds it.
  const mode_t umask_before = address.unix_socket ? umask(0117) : 0;
  listening.server = builder->BuildAndStart();
  if (address.unix_socket) umask(umask_before);
  if (!listening.server || listening.port == 0) {
    if (listening.server) listening.server->Shutdown();
    if (listening.lock_fd >= 0) close(listening.lock_fd);
    return absl::UnavailableError(absl::StrCat(address.flag, ": cannot listen on ", address.text,
                                               ": ", DiagnoseListenFailure(address)));
  }
  listening.address =
      address.unix_socket
          ? address.text
          : absl::StrCat(address.text.substr(0, address.text.rfind(':')), ":", listening.port);
  return listening;
}

}  // namespace virtgate
