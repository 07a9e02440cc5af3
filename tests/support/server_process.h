// Layer 3 of the test support: the real virtgated binary run as a child
// process, with the generated stubs to call it. The gRPC API only: it links
// no server code, so the server under test is always the binary (the cli,
// resilience and end-to-end tests rely on that).
//
// It listens on a unix socket of its own (or the given target). Start()
// returns once its health check answers SERVING (or anything at all, with
// wait_serving = false); readiness is polled with a deadline, never slept for.
//
// With trace_libvirt_rpc, virtgated's libvirt client library logs every RPC
// it queues (LIBVIRT_LOG_FILTERS=2:rpc.netclient to a file of ours), so a test
// can count the libvirt round trips one of its calls caused: each call of the
// remote program is one "RPC_CLIENT_MSG_TX_QUEUE ... prog=536903814 ...
// type=0" line; keepalives (another program) and events (type=2) are not.
#pragma once

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/command.h"
#include "tests/support/files.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::testing {

class ServerProcess {
 public:
  struct Config {
    std::string libvirt_uri = "test:///default";
    // "unix:/path" to listen on. Empty: a socket in a temporary directory
    // of the server's own, removed with it.
    std::string target;
    // Where the server's stdout and stderr go (appended). Empty: next to
    // the socket ("<socket path>.log").
    std::string log_path;
    // More flags, e.g. "--keepalive_interval=1". A later flag overrides an
    // earlier one, so these may override the defaults here.
    std::vector<std::string> extra_flags;
    // More environment, "NAME=value" (e.g. VIRTGATE_READ_ONLY=false).
    std::vector<std::string> extra_env;
    // virtgated's --shutdown_grace.
    absl::Duration shutdown_grace = absl::Seconds(5);
    // What the destructor does if it still runs: SIGTERM and up to this long
    // for the exit, then SIGKILL. Zero: SIGKILL at once.
    absl::Duration stop_grace = absl::ZeroDuration();
    bool trace_libvirt_rpc = false;
    // Run as another user (needs root): uid, gid and supplementary groups.
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    std::vector<gid_t> groups;
    // The server's own temporary directory is /tmp/<prefix>.XXXXXX.
    std::string temp_dir_prefix = "virtgated";
    // Start() waits until health says SERVING; false: until it answers at
    // all (e.g. NOT_SERVING while libvirt is not up yet).
    bool wait_serving = true;
    // stdin a pipe that the test holds open and never writes, instead of
    // /dev/null: anything that reads stdin (a password prompt) blocks.
    bool stdin_pipe = false;
    // Also serve health alone in plaintext on a socket of its own
    // (--health_listen=unix:<socket>.health), and check health there: for
    // a server whose --listen wants TLS (give --tls_* in extra_flags).
    bool health_port = false;
  };

  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(Config config);
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start() { return Start(Config()); }
  ~ServerProcess();  // see Config::stop_grace

  // Sends SIGTERM and returns the wait status once it exited (or
  // DEADLINE_EXCEEDED after `deadline`).
  absl::StatusOr<int> Terminate(absl::Duration deadline = kProcessDeadline);

  v1::Hypervisor::Stub* stub() { return stub_.get(); }
  // Health on target(), or on health_target() with Config::health_port.
  grpc::health::v1::Health::Stub* health() { return health_.get(); }
  const std::string& target() const { return target_; }
  // With Config::health_port: where it serves health alone ("unix:...").
  const std::string& health_target() const { return health_target_; }
  pid_t pid() const { return pid_; }
  std::string Log() const { return ReadFile(log_path_); }
  // Where it serves /metrics ("127.0.0.1:41234"; a free port unless
  // extra_flags give another --metrics_listen), from its log; "" if it does
  // not.
  std::string MetricsAddress() const;

  // "SERVING", "NOT_SERVING", ... or the call's error, for `service`:
  // by default virtgate.v1.Hypervisor, which follows libvirt ("" is the
  // process itself, SERVING until shutdown).
  std::string HealthStatus(absl::Duration timeout = absl::Seconds(2),
                           const std::string& service = "virtgate.v1.Hypervisor");

  // Size of the RPC trace so far; pass it to RemoteCallsSince.
  size_t RpcTraceOffset() const;
  // libvirt remote-program calls virtgated queued since `offset`, by
  // procedure number (e.g. 273 ConnectListAllDomains, 344
  // ConnectGetAllDomainStats, 16 DomainGetInfo).
  std::map<int, int> RemoteCallsSince(size_t offset) const;

 private:
  ServerProcess() = default;
  void Connect();

  std::unique_ptr<TempDir> dir_;  // only when the server chose its socket
  std::string target_;
  std::string health_target_;
  std::string log_path_;
  std::string rpc_trace_path_;
  absl::Duration stop_grace_;
  pid_t pid_ = -1;
  int stdin_writer_ = -1;  // the never-written end of a stdin pipe
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// "273 ConnectListAllDomains x3, 344 ConnectGetAllDomainStats x1" for messages.
std::string DescribeCalls(const std::map<int, int>& calls);
int TotalCalls(const std::map<int, int>& calls);

// A deadline for a ClientContext, `timeout` from now.
std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout);

// The virtgated and virtgatectl binaries under test.
std::string VirtgatedPath();
std::string VirtgatectlPath();
// Runs the virtgatectl under test with `args` (and `env`, "NAME=value").
CommandResult RunCtl(std::vector<std::string> args, const std::vector<std::string>& env = {});

}  // namespace virtgate::testing
