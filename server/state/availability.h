// Availability: what virtgated can serve right now, as the parts that know
// it report it: call connections up (the pool; calls are served) and events
// in step (the domain cache; watches and cached reads are current).
//
// Written from any thread, libvirt's event loop included: the setters never
// block and call nothing. Read by GetHostInfo, and by the HealthReporter,
// which waits for changes and tells gRPC's health service. So health,
// GetHostInfo and watches tell one story whatever is stuck in libvirt.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace virtgate {

class Availability {
 public:
  struct State {
    bool calls_up = false;
    bool events_up = false;
    uint64_t version = 0;  // bumps on every change
  };

  void SetCallsUp(bool up);
  void SetEventsUp(bool up);
  State Get() const;
  // The state once its version differs from `seen`, or at `deadline`.
  State WaitForChange(uint64_t seen, absl::Time deadline) const;

 private:
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
