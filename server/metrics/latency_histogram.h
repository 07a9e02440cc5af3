// LatencyHistogram: how long things took, in fixed buckets of seconds, as
// Prometheus histograms want them (Exposition::Histogram). Not thread-safe:
// its owner locks (RpcMetrics, CallCounts).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/time/time.h"

namespace virtgate {

class LatencyHistogram {
 public:
  // Upper bounds in seconds, 100 µs to 60 s: a cached read answers in the
  // first buckets, a stalled libvirt call in the last ones.
  static const std::vector<double>& Bounds();

  void Observe(absl::Duration duration);

  // Per bucket (Bounds().size() + 1 entries, the last above every bound).
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum_seconds() const { return sum_seconds_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<uint64_t> counts_ = std::vector<uint64_t>(Bounds().size() + 1);
  double sum_seconds_ = 0;
  uint64_t count_ = 0;
};

}  // namespace virtgate
