#include "tests/support/percentile.h"

#include <algorithm>
#include <cstddef>

namespace virtgate::testing {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(q * values.size()))];
}

}  // namespace virtgate::testing
