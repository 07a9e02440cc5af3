// Latencies: times each benchmark iteration and reports the distribution
// (p50_ms, p99_ms counters), not just the mean. Header-only, shared by the
// listing benchmarks.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

namespace virtgate::bench {

class Latencies {
 public:
  void Add(std::chrono::steady_clock::duration d) {
    ms_.push_back(std::chrono::duration<double, std::milli>(d).count());
  }
  // Sets p50_ms and p99_ms; nothing if no iteration was timed.
  void Report(benchmark::State& state) {
    if (ms_.empty()) return;
    std::sort(ms_.begin(), ms_.end());
    auto at = [&](double q) { return ms_[std::min(ms_.size() - 1, size_t(q * ms_.size()))]; };
    state.counters["p50_ms"] = at(0.50);
    state.counters["p99_ms"] = at(0.99);
  }

 private:
  std::vector<double> ms_;
};

}  // namespace virtgate::bench
