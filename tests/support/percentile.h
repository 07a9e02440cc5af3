// Layer 5 of the test support (no dependencies): the one percentile of the
// tests and benchmarks.
#pragma once

#include <vector>

namespace virtgate::testing {

// The q-quantile (0 <= q <= 1) of `values` by the nearest-rank rule: the
// element at index min(n - 1, floor(q * n)) of the sorted values; 0 if
// there are none. Percentile(v, 1.0) is the maximum.
double Percentile(std::vector<double> values, double q);

}  // namespace virtgate::testing
