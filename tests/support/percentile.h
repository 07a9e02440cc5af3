// Layer 5 of the test support (no dependencies): the one percentile of the
// tests and benchmarks.
#pragma once

#include <vector>

namespace virtgate::testing {

// The q-quantile (0 <= q <= 1) of `values` by the nearest-rank rule: the
// ceil(q * n)-th smallest (at least the first); 0 if there are none. So the
// p99 of 100 values is the 99th, not the maximum; Percentile(v, 1.0) is the
// maximum.
double Percentile(std::vector<double> values, double q);

}  // namespace virtgate::testing
