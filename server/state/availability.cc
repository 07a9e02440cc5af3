#include "server/state/availability.h"

namespace virtgate {

void Availability::SetCallsUp(bool up) {
  absl::MutexLock lock(&mu_);
  if (state_.calls_up == up) return;
  state_.calls_up = up;
  ++state_.version;
}

void Availability::SetEventsUp(bool up) {
  absl::MutexLock lock(&mu_);
  if (state_.events_up == up) return;
  state_.events_up = up;
  ++state_.version;
}

Availability::State Availability::Get() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

Availability::State Availability::WaitForChange(uint64_t seen, absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return state_.version != seen;
  };
  mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
  return state_;
}

}  // namespace virtgate
