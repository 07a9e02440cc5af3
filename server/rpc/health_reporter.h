// HealthReporter: tells the health services (grpc.health.v1, HealthService:
// the API port's, and --health_listen's when set) what Availability says,
// the same to each, on a thread of its own:
//   ""                                     SERVING from start to shutdown
//                                          (virtgated lives: liveness);
//   "virtgate.v1.Hypervisor"               SERVING while a call connection is
//                                          up (calls are served: readiness);
//   "virtgate.v1.Hypervisor/WatchLifecycle" SERVING while events flow and
//                                          the domain cache is in step.
// The pool and the cache report changes the moment they see them, from any
// thread; this thread only forwards them, so health never waits on a
// thread stuck in libvirt.
#pragma once

#include <grpcpp/health_check_service_interface.h>

#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/state/availability.h"

namespace virtgate {

// The health service name that follows events.
inline constexpr char kEventsHealthService[] = "virtgate.v1.Hypervisor/WatchLifecycle";

class HealthReporter {
 public:
  // Every one of `health` must outlive Stop().
  HealthReporter(std::shared_ptr<Availability> availability,
                 std::vector<grpc::HealthCheckServiceInterface*> health);
  ~HealthReporter();  // Stop()

  // No more updates after this returns (shutdown sets NOT_SERVING itself).
  void Stop();

 private:
  void Run(uint64_t seen);
  void Report(const Availability::State& state);

  const std::shared_ptr<Availability> availability_;
  const std::vector<grpc::HealthCheckServiceInterface*> health_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace virtgate
