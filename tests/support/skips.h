// How a test binary reports that it skipped (see test_main.cc), shared by
// the gtest binaries and the QEMU benchmark.
#pragma once

#include <cstdlib>
#include <cstring>

namespace virtgate::testing {

// Every test entry's SKIP_RETURN_CODE in CMake (the automake convention).
inline constexpr int kSkipExitCode = 77;

// VIRTGATE_NO_SKIPS=1: CI, where everything a test needs is installed.
inline bool SkipsAreFailures() {
  const char* value = std::getenv("VIRTGATE_NO_SKIPS");
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace virtgate::testing
