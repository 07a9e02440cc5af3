#include "tests/bench/bench_phases.h"

#include <signal.h>

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/bench/bench_listing.h"
#include "tests/bench/bench_watchers.h"
#include "tests/support/percentile.h"
#include "tests/support/wait_for.h"

namespace virtgate::bench {
namespace {

using testing::Percentile;

// Who lists: virtgated, or this process straight from libvirt.
enum Reader { kThroughVirtgate, kDirect };

std::string Count(int n) { return FormatFigure(n); }

// Times `once` at the rig's size; a row with p50/p99 (and x_floor when a
// floor is given). Returns p50, or -1 when the result was wrong.
double TimeCase(BenchRig* rig, const BenchPlan& plan, BenchReport* report, const std::string& name,
                const std::function<absl::StatusOr<int>()>& once, double floor_p50, int max_runs,
                Reader reader = kThroughVirtgate) {
  // One untimed run: the test driver's per-domain facts are read once.
  (void)once();
  const size_t trace = rig->server()->RpcTraceOffset();
  absl::StatusOr<std::vector<double>> ms =
      TimeRuns(once, rig->domains(), plan.min_runs, max_runs, plan.per_case);
  const int calls = testing::TotalCalls(rig->server()->RemoteCallsSince(trace));
  const std::string row = absl::StrCat(name, ", N=", Count(rig->domains()));
  if (!ms.ok() && reader == kDirect && absl::StrContains(ms.status().message(), "16384")) {
    // libvirt's remote protocol returns at most 16,384 domains per call.
    report->Add({"Listing latency",
                 row,
                 {},
                 "fails: libvirt's remote protocol returns at most "
                 "16,384 domains per call"});
    return -1;
  }
  if (!ms.ok()) {
    report->Wrong(absl::StrCat(row, ": ", ms.status().ToString()));
    return -1;
  }
  const double p50 = Percentile(*ms, 0.5);
  BenchRow r{"Listing latency", row, {{"p50_ms", p50}, {"p99_ms", Percentile(*ms, 0.99)}}, ""};
  if (floor_p50 > 0) r.figures.push_back({"x_floor_p50", p50 / floor_p50});
  r.figures.push_back({"runs", static_cast<double>(ms->size())});
  // virtgated's libvirt calls per listing (none for the direct cases).
  r.figures.push_back({"libvirt_calls", static_cast<double>(calls) / ms->size()});
  report->Add(std::move(r));
  return p50;
}

struct Concurrent {
  double per_s = 0;
  double p99_ms = 0;
};

// `clients` threads each running `once(i)` for `time`; every run must list
// `want` domains.
Concurrent RunConcurrent(int clients, absl::Duration time, int want,
                         const std::function<absl::StatusOr<int>(int)>& once, BenchReport* report,
                         const std::string& what) {
  absl::Mutex mu;
  std::vector<double> ms;
  std::string wrong;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + absl::ToChronoNanoseconds(time);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      std::vector<double> mine;
      while (std::chrono::steady_clock::now() < end) {
        const auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<int> got = once(i);
        mine.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
        if (!got.ok() || *got != want) {
          absl::MutexLock lock(&mu);
          wrong = got.ok() ? absl::StrCat("listed ", *got, " of ", want) : got.status().ToString();
          break;
        }
      }
      absl::MutexLock lock(&mu);
      ms.insert(ms.end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!wrong.empty()) report->Wrong(absl::StrCat(what, ": ", wrong));
  return {static_cast<double>(ms.size()) / seconds, Percentile(ms, 0.99)};
}

}  // namespace

BenchPlan BenchPlan::Quick() {
  BenchPlan p;
  p.quick = true;
  p.sizes = {100, 1000};
  p.min_runs = 3;
  p.max_runs = 10;
  p.per_case = absl::Milliseconds(300);
  p.throughput_size = 100;
  p.clients = {1, 8};
  p.throughput_time = absl::Milliseconds(500);
  p.events_size = 100;
  p.watchers = {1, 50};
  p.events_per_case = 10;
  p.sustained_watchers = 10;
  p.actors = 2;
  p.sustained_time = absl::Milliseconds(300);
  p.storm_size = 1000;
  p.storm_watchers = 50;
  p.memory_after_trim = false;
  return p;
}

void MeasureListing(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  const int n = rig->domains();
  virConnectPtr direct = rig->admin();
  const double floor = TimeCase(
      rig, plan, report, "floor: ListAllDomains + GetAllDomainStats",
      [&] { return ListAllWithStats(direct); }, 0, plan.max_runs, kDirect);
  TimeCase(
      rig, plan, report, "floor: GetAllDomainStats alone", [&] { return GetAllStats(direct); },
      floor, plan.max_runs, kDirect);
  if (n <= plan.per_domain_info_max) {
    TimeCase(
        rig, plan, report, "naive: ListAllDomains + virDomainGetInfo each",
        [&] { return PerDomainInfo(direct); }, floor, std::min(plan.max_runs, 20), kDirect);
  }
  auto stub = std::move(Stubs(rig->target(), 1, kOwnConnections)[0]);
  auto through = [&](int page, v1::ReadConsistency c) {
    return [&stub, page, c] { return ListThroughVirtgate(stub.get(), page, c); };
  };
  const double fresh =
      TimeCase(rig, plan, report, "virtgate FRESH, pages of 5,000",
               through(kLargestPage, v1::READ_CONSISTENCY_FRESH), floor, plan.max_runs);
  TimeCase(rig, plan, report, "virtgate FRESH, default pages (500)",
           through(0, v1::READ_CONSISTENCY_FRESH), floor, plan.max_runs);
  const double cached =
      TimeCase(rig, plan, report, "virtgate CACHED, pages of 5,000",
               through(kLargestPage, v1::READ_CONSISTENCY_CACHED), floor, plan.max_runs);
  if (floor > 0 && fresh > 0) {
    report->Target({absl::StrCat("FRESH listing p50 / floor, N=", Count(n)), fresh / floor, 1.2,
                    BenchTarget::kAtMost, "×"});
  }
  if (floor > 0 && cached > 0 && n >= 1000) {
    report->Target({absl::StrCat("CACHED listing p50 / floor, N=", Count(n)), cached / floor, 0.25,
                    BenchTarget::kAtMost, "×"});
  }
}

void MeasureThroughput(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  const int n = rig->domains();
  for (const int clients : plan.clients) {
    const std::string suffix = absl::StrCat(", ", clients, " client(s), N=", Count(n));
    auto add = [&](const std::string& name, const Concurrent& c) {
      report->Add({"Listing throughput",
                   absl::StrCat(name, suffix),
                   {{"per_s", c.per_s}, {"p99_ms", c.p99_ms}},
                   ""});
    };
    ConnectHandle shared = rig->Connect();
    const Concurrent one = RunConcurrent(
        clients, plan.throughput_time, n, [&](int) { return ListAllWithStats(shared.get()); },
        report, "floor, one connection");
    add("floor, one shared connection", one);
    std::vector<ConnectHandle> own;
    for (int i = 0; i < clients; ++i) own.push_back(rig->Connect());
    const Concurrent each = RunConcurrent(
        clients, plan.throughput_time, n, [&](int i) { return ListAllWithStats(own[i].get()); },
        report, "floor, a connection each");
    add("floor, a connection per client", each);
    auto stubs = Stubs(rig->target(), clients, kOwnConnections);
    for (const auto c : {v1::READ_CONSISTENCY_FRESH, v1::READ_CONSISTENCY_CACHED}) {
      const std::string name = c == v1::READ_CONSISTENCY_FRESH ? "FRESH" : "CACHED";
      const Concurrent v = RunConcurrent(
          clients, plan.throughput_time, n,
          [&](int i) { return ListThroughVirtgate(stubs[i].get(), kLargestPage, c); }, report,
          absl::StrCat("virtgate ", name));
      add(absl::StrCat("virtgate ", name, ", a channel per client"), v);
      const double best = std::max(one.per_s, each.per_s);
      if (c == v1::READ_CONSISTENCY_FRESH && clients == plan.clients.back() && best > 0) {
        report->Target({absl::StrCat("FRESH listings/s / floor's best, ", clients, " clients"),
                        v.per_s / best, 1.0, BenchTarget::kAtLeast, "×"});
      }
    }
  }
}

void MeasureStall(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  rig->daemon()->Pause();
  std::vector<double> health_ms;
  std::string not_serving;
  for (int i = 0; i < (plan.quick ? 20 : 200); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string status = rig->server()->HealthStatus(absl::Seconds(5));
    health_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (status.find("SERVING") == std::string::npos) not_serving = status;
  }
  auto stub = std::move(Stubs(rig->target(), 1, kOwnConnections)[0]);
  std::vector<double> overshoot_ms;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<int> got =
        ListThroughVirtgate(stub.get(), kLargestPage, v1::READ_CONSISTENCY_FRESH, absl::Seconds(1));
    overshoot_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() -
        1000);
    if (got.ok()) report->Wrong("a FRESH listing succeeded with libvirtd stopped");
  }
  rig->daemon()->Resume();
  if (!not_serving.empty()) report->Wrong(absl::StrCat("health under a stall: ", not_serving));
  report->Add({"Stall isolation (libvirtd SIGSTOPped)",
               "health check (Check)",
               {{"p50_ms", Percentile(health_ms, 0.5)}, {"p99_ms", Percentile(health_ms, 0.99)}},
               "answered every time, SERVING or NOT_SERVING"});
  report->Add({"Stall isolation (libvirtd SIGSTOPped)",
               "FRESH listing, 1 s deadline",
               {{"p50_ms", Percentile(overshoot_ms, 0.5)}, {"p99_ms", Percentile(overshoot_ms, 1)}},
               "time past the deadline (negative: failed before it)"});
  // Back to serving before anything else runs.
  if (!testing::WaitFor([&] { return rig->server()->HealthStatus() == "SERVING"; },
                        absl::Minutes(2))) {
    report->Wrong("virtgated did not serve again after libvirtd resumed");
  }
}

void MeasureMemory(BenchRig* rig, const std::string& what, BenchReport* report) {
  const BenchRig::Memory m = rig->ServerMemory();
  report->Add({"Memory (virtgated)",
               what,
               {{"rss_mb", m.rss_mb}, {"peak_mb", m.peak_mb}, {"threads", double(m.threads)}},
               ""});
}

}  // namespace virtgate::bench
