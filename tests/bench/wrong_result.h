// How a benchmark reports a result that is wrong (a listing incomplete, an
// event not delivered): the benchmark stops with the reason, and the run's
// exit status is 1, so ctest (and CI) fail. Header-only, shared by the
// benchmarks; main() returns ExitStatus().
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>

namespace virtgate::bench {

inline bool& AnyWrong() {
  static bool wrong = false;
  return wrong;
}

inline void Wrong(benchmark::State& state, const std::string& why) {
  std::fprintf(stderr, "benchmark result is wrong: %s\n", why.c_str());
  AnyWrong() = true;
  state.SkipWithError(why.c_str());
}

inline int ExitStatus() { return AnyWrong() ? 1 : 0; }

}  // namespace virtgate::bench
