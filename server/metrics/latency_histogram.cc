#include "server/metrics/latency_histogram.h"

#include <algorithm>

namespace virtgate {

const std::vector<double>& LatencyHistogram::Bounds() {
  static const std::vector<double> bounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10,    30,     60};
  return bounds;
}

void LatencyHistogram::Observe(absl::Duration duration) {
  const double seconds = std::max(0.0, absl::ToDoubleSeconds(duration));
  const std::vector<double>& bounds = Bounds();
  // The first bucket whose upper bound is >= seconds ("le").
  const size_t bucket = std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin();
  ++counts_[bucket];
  sum_seconds_ += seconds;
  ++count_;
}

}  // namespace virtgate
