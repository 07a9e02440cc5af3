// Layer 1 of the test support (absl only): the one poll-until of the tests.
#pragma once

#include <functional>

#include "absl/time/time.h"

namespace virtgate::testing {

// Polls `condition` (with a short backoff) until it holds or `timeout`
// passes; returns its last value. For state that has no notification; never
// a fixed sleep standing in for synchronisation.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout);

}  // namespace virtgate::testing
