// The measurements of virtgate_bench, one function per phase, each adding
// its rows (and the targets it decides) to the report. All take the rig in
// the state the previous phase left it: domains grow, never shrink.
#pragma once

#include <vector>

#include "absl/time/time.h"
#include "tests/bench/bench_report.h"
#include "tests/bench/bench_rig.h"

namespace virtgate::bench {

// How long and how much: deploy/bench.sh's full run, or --quick (seconds).
struct BenchPlan {
  bool quick = false;
  std::vector<int> sizes = {100, 1000, 10000, 20000};
  int min_runs = 5, max_runs = 100;
  absl::Duration per_case = absl::Seconds(4);
  int per_domain_info_max = 1000;  // the naive client only up to here
  int throughput_size = 1000;
  std::vector<int> clients = {1, 8, 32};
  absl::Duration throughput_time = absl::Seconds(4);
  int events_size = 1000;
  std::vector<int> watchers = {1, 100, 1000};
  int events_per_case = 100;
  int sustained_watchers = 100;
  int actors = 4;
  absl::Duration sustained_time = absl::Seconds(2);  // per paced rate
  int storm_size = 10000;
  int storm_watchers = 1000;
  absl::Duration storm_limit = absl::Minutes(3);  // how long the bench waits for it
  // Before each watcher memory reading, wait for virtgated's memory
  // trimmer to look once more (it logs each look), so readings compare.
  bool memory_after_trim = true;

  static BenchPlan Quick();
};

// p50/p99 of whole listings at the rig's size: the floor, virtgate FRESH
// (largest and default pages) and CACHED; ratios to the floor.
void MeasureListing(BenchRig* rig, const BenchPlan& plan, BenchReport* report);
// Listings/s and p99 with 1..32 concurrent clients, virtgate against the
// floor with one shared connection and with one connection per client.
void MeasureThroughput(BenchRig* rig, const BenchPlan& plan, BenchReport* report);
// Event latency to 1..1,000 watchers (own channels, one channel) against
// a direct libvirt callback; then events/s with no loss.
void MeasureEvents(BenchRig* rig, const BenchPlan& plan, BenchReport* report);
// 1,000 watchers with send_initial_state at once: time to all synced,
// libvirt calls made; virtgated's memory with them idle.
void MeasureStorm(BenchRig* rig, const BenchPlan& plan, BenchReport* report);
// libvirtd SIGSTOPped: health latency, overshoot of 1 s-deadline listings.
void MeasureStall(BenchRig* rig, const BenchPlan& plan, BenchReport* report);
// virtgated's RSS now, as a row named `what`.
void MeasureMemory(BenchRig* rig, const std::string& what, BenchReport* report);

}  // namespace virtgate::bench
