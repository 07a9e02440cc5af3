#include "tests/support/wait_for.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace virtgate::testing {

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  while (!condition()) {
    if (absl::Now() >= deadline) return condition();
    absl::SleepFor(backoff);  // poll interval, not synchronisation
    backoff = std::min(backoff * 2, absl::Milliseconds(25));
  }
  return true;
}

}  // namespace virtgate::testing
