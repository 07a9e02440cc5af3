// HealthService: grpc.health.v1.Health (Check and Watch), in place of gRPC's
// default health service, which it mirrors in everything but one thing: on
// Shutdown() it tells every open Watch NOT_SERVING and then ends the stream.
// gRPC's own (1.51) only sets NOT_SERVING and leaves its watches open, so a
// client that watches health (gRPC's client-side health checking, proxies,
// Kubernetes-style probers that keep the stream) held virtgated's shutdown
// for the whole --shutdown_grace and was then cut off with the calls.
//
// Built on protobuf's generated health messages, it also puts
// grpc/health/v1/health.proto into protobuf's generated pool, where gRPC's
// reflection finds descriptors: grpcurl can describe grpc.health.v1.Health and
// call it without health.proto at hand. (gRPC's default service is built on
// upb and brings no descriptor: reflection listed the service but answered
// "Symbol not found" for it.)
//
// It implements gRPC's HealthCheckServiceInterface, so HealthReporter sets
// statuses on it as it did on the default one. Unknown services: Check is
// NOT_FOUND, Watch sends SERVICE_UNKNOWN and waits (as gRPC's). Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace virtgate {

class HealthService final : public grpc::health::v1::Health::CallbackService,
                            public grpc::HealthCheckServiceInterface {
 public:
  using Response = grpc::health::v1::HealthCheckResponse;

  HealthService();  // "" starts NOT_SERVING

  void SetServingStatus(const std::string& service, bool serving) override;
  void SetServingStatus(bool serving) override;  // every known service
  // Every service NOT_SERVING for good; open watches get it, then end
  // (UNAVAILABLE, "server shutting down"); new watches end at once.
  void Shutdown() override;

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  Response* response) override;
  grpc::ServerWriteReactor<Response>* Watch(
      grpc::CallbackServerContext* ctx,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;

  Response::ServingStatus StatusLocked(const std::string& service) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  using Statuses = std::map<std::string, Response::ServingStatus>;
  // Queues the new status into each watcher whose status changed since
  // `before` (into every watcher, ending it, with `end`); the caller kicks
  // them once the lock is released.
  std::vector<Watcher*> QueueChangesLocked(const Statuses& before, bool end)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Remove(Watcher* watcher);

  mutable absl::Mutex mu_;
  Statuses statuses_ ABSL_GUARDED_BY(mu_);
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace virtgate
