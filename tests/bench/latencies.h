// Latencies: times each benchmark iteration and reports the distribution
// (p50_ms, p99_ms counters), not just the mean. Header-only, shared by the
// listing benchmarks.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <vector>

#include "tests/support/percentile.h"

namespace virtgate::bench {

class Latencies {
 public:
  void Add(std::chrono::steady_clock::duration d) {
    ms_.push_back(std::chrono::duration<double, std::milli>(d).count());
  }
  // Sets p50_ms and p99_ms; nothing if no iteration was timed.
  void Report(benchmark::State& state) {
    if (ms_.empty()) return;
    state.counters["p50_ms"] = testing::Percentile(ms_, 0.50);
    state.counters["p99_ms"] = testing::Percentile(ms_, 0.99);
  }

 private:
  std::vector<double> ms_;
};

}  // namespace virtgate::bench
