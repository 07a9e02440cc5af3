// HealthListener: grpc.health.v1.Health alone, on a plaintext address of
// its own (--health_listen), for probers that cannot speak to the API port:
// the kubelet's gRPC probe presents no client certificate and, in most
// Kubernetes versions, speaks no TLS at all. It serves no other service:
// not virtgate.v1.Hypervisor, not reflection (UNIMPLEMENTED for both), so
// plaintext is safe on any address: it only says SERVING or NOT_SERVING.
//
// gRPC registers a service object on one server only and has no
// per-port services, so this is a second grpc::Server with a HealthService
// of its own. HealthReporter sets the same statuses on it as on the API
// port's; Server shuts it down with the API server.
//
// Built and shut down by Server (one thread); service() is thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/rpc/connection_limits.h"
#include "server/rpc/health_service.h"
#include "server/rpc/listen_address.h"

namespace virtgate {

class HealthListener {
 public:
  // Listens on `address` (its flag names every error). `limits` are the
  // API port's (request size, pings, idle connections).
  static absl::StatusOr<std::unique_ptr<HealthListener>> Start(const ListenAddress& address,
                                                               const ConnectionLimits& limits);
  ~HealthListener();  // Shutdown(now), and the unix socket's lock released

  // What probes dial: "127.0.0.1:41234" (port resolved) or "unix:/path".
  const std::string& address() const { return address_; }

  // Where HealthReporter sets statuses; Shutdown() here makes every service
  // NOT_SERVING and ends the health watches (see HealthService).
  HealthService* service() { return service_.get(); }

  // Stops listening; calls still open after `deadline` are cancelled.
  // Idempotent.
  void Shutdown(absl::Time deadline);

 private:
  HealthListener() = default;

  // Outlives the gRPC server: its reactors call back into it.
  std::unique_ptr<HealthService> service_ = std::make_unique<HealthService>();
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int lock_fd_ = -1;
  bool shut_down_ = false;
};

}  // namespace virtgate
