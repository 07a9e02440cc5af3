#include "server/rpc/health_reporter.h"

#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {

HealthReporter::HealthReporter(std::shared_ptr<Availability> availability,
                               std::vector<grpc::HealthCheckServiceInterface*> health)
    : availability_(std::move(availability)), health_(health) {
  const Availability::State now = availability_->Get();
  Report(now);  // before the first change
  thread_ = std::thread([this, seen = now.version] { Run(seen); });
}

HealthReporter::~HealthReporter() { Stop(); }

void HealthReporter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void HealthReporter::Report(const Availability::State& state) {
  for (grpc::HealthCheckServiceInterface* health : health_) {
    // "" is virtgated itself: SERVING until shutdown whatever libvirt does,
    // so a liveness probe on it never restarts virtgated for an outage a
    // restart cannot cure. What follows libvirt is the service's name.
    health->SetServingStatus("", true);
    health->SetServingStatus(v1::Hypervisor::service_full_name(), state.calls_up);
    health->SetServingStatus(kEventsHealthService, state.events_up);
  }
}

void HealthReporter::Run(uint64_t seen) {
  for (;;) {
    // Wakes at least every 100ms to notice Stop().
    const Availability::State state =
        availability_->WaitForChange(seen, absl::Now() + absl::Milliseconds(100));
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    if (state.version == seen) continue;
    seen = state.version;
    Report(state);  // under mu_: Stop() returns only once no report runs
  }
}

}  // namespace virtgate
