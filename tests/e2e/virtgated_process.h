// Virtgated: the real virtgated binary run as a child process against
// qemu:///system (or another URI), listening on a unix socket of its own,
// with the generated stubs to call it.
//
// With trace_libvirt_rpc, virtgated's libvirt client library logs every RPC
// it queues (LIBVIRT_LOG_FILTERS=2:rpc.netclient to a file of ours), so a test
// can count the libvirt round trips one of its calls caused: each call of the
// remote program is one "RPC_CLIENT_MSG_TX_QUEUE ... prog=536903814 ...
// type=0" line; keepalives (another program) and events (type=2) are not.
#pragma once

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/e2e/child_process.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::e2e {

class Virtgated {
 public:
  struct Config {
    std::string libvirt_uri = "qemu:///system";
    std::vector<std::string> extra_flags;
    bool trace_libvirt_rpc = false;
    // Run as another user (needs root): uid, gid and supplementary groups.
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
    std::vector<gid_t> groups;
    // Start() waits until health says SERVING; false: until it answers at all.
    bool wait_serving = true;
  };

  static absl::StatusOr<std::unique_ptr<Virtgated>> Start(Config config);
  static absl::StatusOr<std::unique_ptr<Virtgated>> Start() { return Start(Config()); }
  ~Virtgated();  // SIGTERM (graceful), SIGKILL if it hangs

  v1::Hypervisor::Stub* stub() { return stub_.get(); }
  grpc::health::v1::Health::Stub* health() { return health_.get(); }
  const std::string& target() const { return target_; }
  pid_t pid() const { return pid_; }
  std::string Log() const { return ReadFile(log_path_); }

  // "SERVING", "NOT_SERVING", ... or the call's error.
  std::string HealthStatus(absl::Duration timeout = absl::Seconds(2));

  // Size of the RPC trace so far; pass it to RemoteCallsSince.
  size_t RpcTraceOffset() const;
  // libvirt remote-program calls virtgated queued since `offset`, by
  // procedure number (e.g. 273 ConnectListAllDomains, 344
  // ConnectGetAllDomainStats, 16 DomainGetInfo).
  std::map<int, int> RemoteCallsSince(size_t offset) const;

 private:
  Virtgated() = default;

  std::unique_ptr<TempDir> dir_;
  std::string target_;
  std::string log_path_;
  std::string rpc_trace_path_;
  pid_t pid_ = -1;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// "273 ConnectListAllDomains x3, 344 ConnectGetAllDomainStats x1" for messages.
std::string DescribeCalls(const std::map<int, int>& calls);
int TotalCalls(const std::map<int, int>& calls);

// A deadline for a ClientContext, `timeout` from now.
std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout);

}  // namespace virtgate::e2e
