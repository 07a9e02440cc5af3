// virtgate_bench: virtgate beside the raw libvirt floor, at every scale, in
// one run (deploy/bench.sh runs it). Starts a private test-driver libvirtd,
// grows it to N = 100, 1,000, 10,000 and 20,000 domains (half running),
// runs the real virtgated against it as its own process, and measures
// listing latency and throughput, event latency and events/s, a reconnect
// storm, a libvirtd stall and virtgated's memory. Writes every figure to
// <out>/virtgate_bench.json and a Markdown table to <out>/virtgate_bench.md.
//
//   virtgate_bench [--quick] [--out=DIR]
//
// --quick: small N and short cases (seconds), for CI, so the benchmark
// cannot rot. A wrong result (a listing incomplete, an event lost or out of
// sequence) exits 1; a missed target (a storm that made libvirt calls, a
// slow listing) is reported, not failed.
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "tests/bench/bench_phases.h"

namespace virtgate::bench {
namespace {

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

void Describe(const BenchPlan& plan, BenchReport* report) {
  utsname u{};
  uname(&u);
  report->SetContext("command", plan.quick ? "deploy/bench.sh --quick" : "deploy/bench.sh");
  report->SetContext("date",
                     absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone()));
  report->SetContext("machine", absl::StrCat(std::thread::hardware_concurrency(), " CPUs (",
                                             CpuModel(), "), Linux ", u.release));
  report->SetContext("libvirt", absl::StrCat("test driver in a private libvirtd, ",
                                             LIBVIR_VERSION_NUMBER / 1000000, ".",
                                             LIBVIR_VERSION_NUMBER / 1000 % 1000));
  report->SetContext("virtgated",
                     "its own process, gRPC over TCP loopback, default flags "
                     "(watch limits raised for the storm)");
}

int Run(const BenchPlan& plan, const std::string& out) {
  BenchReport report;
  Describe(plan, &report);
  absl::StatusOr<std::unique_ptr<BenchRig>> rig = BenchRig::Start();
  if (!rig.ok()) {
    std::fprintf(stderr, "virtgate_bench: %s\n", rig.status().ToString().c_str());
    return 1;
  }
  auto step = [](const std::string& what) {
    std::fprintf(stderr, "virtgate_bench: %s\n", what.c_str());
  };
  MeasureMemory(rig->get(), "idle, N=1", &report);
  for (const int n : plan.sizes) {
    step(absl::StrCat("growing to ", n, " domains"));
    if (absl::Status s = (*rig)->GrowTo(n); !s.ok()) {
      report.Wrong(s.ToString());
      break;
    }
    step(absl::StrCat("listing latency at N=", n));
    MeasureListing(rig->get(), plan, &report);
    if (n == plan.throughput_size) {
      step("listing throughput");
      MeasureThroughput(rig->get(), plan, &report);
    }
    if (n == plan.events_size) {
      step("event latency and events/s");
      MeasureEvents(rig->get(), plan, &report);
    }
    if (n == plan.storm_size) {
      step("reconnect storm and memory");
      MeasureStorm(rig->get(), plan, &report);
    }
  }
  step("libvirtd stall");
  MeasureStall(rig->get(), plan, &report);
  MeasureMemory(rig->get(), "at the end", &report);
  rig->reset();
  if (absl::Status s = report.WriteTo(out); !s.ok()) {
    std::fprintf(stderr, "virtgate_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  std::fputs(report.Markdown().c_str(), stdout);
  std::fprintf(stderr, "virtgate_bench: wrote %s/virtgate_bench.json and .md\n", out.c_str());
  return report.any_wrong() ? 1 : 0;
}

}  // namespace
}  // namespace virtgate::bench

int main(int argc, char** argv) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // 1,000 watchers on channels of their own are 1,000 sockets.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  virtgate::bench::BenchPlan plan;
  std::string out = "build/bench";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      plan = virtgate::bench::BenchPlan::Quick();
    } else if (absl::StartsWith(arg, "--out=")) {
      out = arg.substr(6);
    } else {
      std::fprintf(stderr, "usage: virtgate_bench [--quick] [--out=DIR]\n");
      return 2;
    }
  }
  return virtgate::bench::Run(plan, out);
}
