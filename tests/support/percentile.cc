#include "tests/support/percentile.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace virtgate::testing {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(q * static_cast<double>(values.size()));
  return values[std::min(values.size() - 1, static_cast<size_t>(std::max(rank, 1.0)) - 1)];
}

}  // namespace virtgate::testing
