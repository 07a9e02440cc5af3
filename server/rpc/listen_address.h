// ListenAddress: --listen parsed and checked once, before anything binds.
//
// gRPC accepts more than we mean to serve on, and says little when it
// cannot: a port above 65535 wraps, "unix:" binds an abstract socket named
// by NUL bytes, a port already taken is shared silently (SO_REUSEPORT, which
// virtgated turns off), and a second server on a unix socket path deletes
// the first one's live socket. Here each is refused with a message that
// names the problem, and a unix socket is only ever replaced when nothing
// answers on it.
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace virtgate {

struct ListenAddress {
  // The flag that gave it ("--listen", "--health_listen"): every error
  // about the address names it.
  std::string flag = "--listen";
  // "HOST:PORT", "[IPV6]:PORT" or "unix:/ABSOLUTE/PATH", as given.
  std::string text;
  bool unix_socket = false;
  std::string host;  // without brackets; empty for a unix socket
  int port = 0;      // 0: any free port
  std::string path;  // the unix socket's path
  // 127.0.0.0/8 or ::1 literals, "localhost", or a unix socket.
  bool loopback = false;
};

// INVALID_ARGUMENT, naming `flag` and what is wrong, for anything else.
absl::StatusOr<ListenAddress> ParseListenAddress(const std::string& text,
                                                 const std::string& flag = "--listen");

// Before gRPC binds a unix socket. First an exclusive lock on
// "<path>.lock", held as long as the returned descriptor is open (keep it
// for the server's lifetime): of two servers starting at once on one path,
// the second is refused before it can unlink the first one's socket. Then a
// socket file nothing answers on (left by a server that died) is removed; a
// live one, a symlink or any other file is refused (FAILED_PRECONDITION).
// For TCP: nothing to do, -1.
absl::StatusOr<int> PrepareListener(const ListenAddress& address);

// After gRPC could not listen: why, from a bind of our own ("address in
// use", "permission denied", "cannot resolve", "directory ... does not
// exist"...).
std::string DiagnoseListenFailure(const ListenAddress& address);

// A gRPC server listening on one address.
struct Listening {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // what clients dial: the port resolved, or "unix:/path"
  int port = 0;
  int lock_fd = -1;     // a unix socket's lock (PrepareListener); the caller closes it
};

// PrepareListener, then binds `address` through `builder` (everything else
// already set on it) and starts the server: SO_REUSEPORT off, so a port
// another process holds is an error rather than shared, and a unix socket
// mode 0660 from the start. Errors name the flag and why
// (DiagnoseListenFailure).
absl::StatusOr<Listening> StartListening(const ListenAddress& address,
                                         std::shared_ptr<grpc::ServerCredentials> credentials,
                                         grpc::ServerBuilder* builder);

}  // namespace virtgate
