// ProcessMetrics: the standard process_* metrics every Prometheus client
// library exports (CPU time, resident and virtual memory, open and maximum
// file descriptors, start time), read from /proc/self at each scrape, plus
// the thread count. Linux only. Thread-safe (stateless but for the clock
// ticks and boot time, read once).
#pragma once

#include "server/metrics/exposition.h"

namespace virtgate {

class ProcessMetrics {
 public:
  ProcessMetrics();
  void Write(Exposition* out) const;

 private:
  long ticks_per_second_;
  double boot_time_seconds_;  // since the epoch, from /proc/stat's btime
};

}  // namespace virtgate
