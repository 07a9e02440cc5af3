// The event phases of virtgate_bench: latency, events/s with no loss, and
// the reconnect storm.
#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "tests/bench/bench_phases.h"
#include "tests/bench/bench_watchers.h"
#include "tests/support/libvirt_direct.h"
#include "tests/support/metrics_text.h"
#include "tests/support/percentile.h"
#include "tests/support/wait_for.h"

namespace virtgate::bench {
namespace {

using testing::Percentile;

// The floor: the same event at a direct libvirt callback in this process.
class DirectClock {
 public:
  void Arm() {
    absl::MutexLock lock(&mu_);
    t0_ = absl::Now();
    seen_ = false;
  }
  bool Wait(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&seen_), deadline);
  }
  std::vector<double> us() {
    absl::MutexLock lock(&mu_);
    return us_;
  }
  static int OnEvent(virConnectPtr, virDomainPtr, int, int, void* opaque) {
    auto* self = static_cast<DirectClock*>(opaque);
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&self->mu_);
    if (!self->seen_) self->us_.push_back(absl::ToDoubleMicroseconds(now - self->t0_));
    self->seen_ = true;
    return 0;
  }

 private:
  absl::Mutex mu_;
  absl::Time t0_ ABSL_GUARDED_BY(mu_);
  bool seen_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<double> us_ ABSL_GUARDED_BY(mu_);
};

// Waits until virtgated has exactly `streams` watch streams open.
bool WaitForStreams(BenchRig* rig, int streams) {
  const std::string address = rig->server()->MetricsAddress();
  return testing::WaitFor(
      [&] {
        absl::StatusOr<std::string> text = testing::ScrapeMetrics(address);
        return text.ok() &&
               testing::SampleValue(*text, "virtgate_watch_streams") == double(streams);
      },
      absl::Minutes(2));
}

std::vector<std::unique_ptr<BenchWatcher>> OpenWatchers(
    const std::vector<std::unique_ptr<v1::Hypervisor::Stub>>& stubs, int count,
    const v1::WatchLifecycleRequest& request, WatchBoard* board) {
  std::vector<std::unique_ptr<BenchWatcher>> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(std::make_unique<BenchWatcher>(stubs[i].get(), request, board));
  }
  return out;
}

// One latency case: `watchers` streams, `own` connections or one.
void LatencyCase(BenchRig* rig, const BenchPlan& plan, int watchers, bool own,
                 virDomainPtr dom, DirectClock* direct, BenchReport* report) {
  const std::string name = absl::StrCat(watchers, watchers == 1 ? " watcher" : " watchers",
                                        watchers == 1 ? "" : own ? ", a channel each"
                                                                 : ", one channel");
  auto stubs = Stubs(rig->target(), watchers, own);
  WatchBoard board;
  auto open = OpenWatchers(stubs, watchers, v1::WatchLifecycleRequest(), &board);
  if (!WaitForStreams(rig, watchers)) {
    report->Wrong(absl::StrCat(name, ": the watches did not open"));
    return;
  }
  const size_t direct_before = direct->us().size();
  const int events = watchers >= 1000 ? plan.events_per_case / 2 : plan.events_per_case;
  for (int i = 0; i < events; ++i) {
    board.Arm(watchers);
    direct->Arm();
    virDomainInfo info;
    const bool paused = virDomainGetInfo(dom, &info) == 0 && info.state == VIR_DOMAIN_PAUSED;
    const int rc = paused ? virDomainResume(dom) : virDomainSuspend(dom);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    if (rc < 0 || !board.WaitArmed(deadline) || !direct->Wait(deadline)) {
      report->Wrong(absl::StrCat(name, ": an event did not reach every watcher"));
      return;
    }
  }
  open.clear();
  std::vector<double> us = board.latencies_us();
  std::vector<double> d = direct->us();
  d.erase(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(direct_before));
  for (const std::string& p : board.problems()) report->Wrong(absl::StrCat(name, ": ", p));
  const double p50 = Percentile(us, 0.5), p99 = Percentile(us, 0.99);
  report->Add({"Event latency", name,
               {{"p50_us", p50}, {"p99_us", p99}, {"max_us", Percentile(us, 1)},
                {"direct_p50_us", Percentile(d, 0.5)}, {"direct_p99_us", Percentile(d, 0.99)},
                {"receipts", double(us.size())}},
               ""});
  if (watchers == 1) {
    report->Target({"1 watcher: p50 over the direct callback's", p50 - Percentile(d, 0.5), 300,
                    false, "µs"});
  } else if (watchers == plan.watchers.back()) {
    report->Target({absl::StrCat(name, ": p99"), p99 / 1000, 2.5, false, "ms"});
  }
}

// Actors suspend and resume domains of their own on connections of their
// own as fast as libvirt lets them; every watcher must get every event, in
// sequence, none dropped.
void SustainedCase(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  const int watchers = plan.sustained_watchers;
  auto stubs = Stubs(rig->target(), watchers, true);
  WatchBoard board;
  auto open = OpenWatchers(stubs, watchers, v1::WatchLifecycleRequest(), &board);
  if (!WaitForStreams(rig, watchers)) {
    report->Wrong("events/s: the watches did not open");
    return;
  }
  std::atomic<int64_t> actions{0};
  std::atomic<bool> failed{false};
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + absl::ToChronoNanoseconds(plan.sustained_time);
  std::vector<std::thread> actors;
  for (int a = 0; a < plan.actors; ++a) {
    actors.emplace_back([&, a] {
      ConnectHandle conn = rig->Connect();
      // vm1-00000, vm1-00002, ...: defined running by GrowTo.
      DomainHandle dom(virDomainLookupByName(conn.get(), absl::StrFormat("vm1-%05d", 2 * a).c_str()));
      for (bool paused = false; dom && std::chrono::steady_clock::now() < end; paused = !paused) {
        if ((paused ? virDomainResume(dom.get()) : virDomainSuspend(dom.get())) < 0) break;
        ++actions;
      }
      if (!dom || std::chrono::steady_clock::now() < end) failed = true;
      // Leave it running.
      virDomainInfo info;
      if (dom && virDomainGetInfo(dom.get(), &info) == 0 && info.state == VIR_DOMAIN_PAUSED) {
        if (virDomainResume(dom.get()) == 0) ++actions;
      }
    });
  }
  for (std::thread& t : actors) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t want = actions.load() * watchers;
  if (failed) report->Wrong("events/s: an actor's suspend/resume failed");
  if (!testing::WaitFor([&] { return board.events() >= want; }, absl::Minutes(1))) {
    report->Wrong(absl::StrCat("events/s: watchers received ", board.events(), " of ", want));
  }
  open.clear();
  for (const std::string& p : board.problems()) report->Wrong(absl::StrCat("events/s: ", p));
  report->Add({"Events sustained", absl::StrCat(plan.actors, " actors, ", watchers,
                                                " watchers (a channel each)"),
               {{"events_per_s", double(actions.load()) / seconds},
                {"deliveries_per_s", double(want) / seconds},
                {"lost", double(want - std::min(want, board.events()))}},
               "every watcher's sequence checked gap-free"});
}

}  // namespace

void MeasureEvents(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  if (absl::Status s = testing::EnsureEventLoop(); !s.ok()) {
    report->Wrong(s.ToString());
    return;
  }
  ConnectHandle observer = rig->Connect();
  ConnectHandle actor = rig->Connect();
  DirectClock direct;
  const int callback = virConnectDomainEventRegisterAny(
      observer.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      VIR_DOMAIN_EVENT_CALLBACK(&DirectClock::OnEvent), &direct, nullptr);
  DomainHandle dom(virDomainLookupByName(actor.get(), "test"));
  if (callback < 0 || !dom) {
    report->Wrong("cannot watch or find the test driver's domain \"test\" directly");
    return;
  }
  for (const int watchers : plan.watchers) {
    LatencyCase(rig, plan, watchers, true, dom.get(), &direct, report);
    if (watchers > 1) LatencyCase(rig, plan, watchers, false, dom.get(), &direct, report);
  }
  virConnectDomainEventDeregisterAny(observer.get(), callback);
  SustainedCase(rig, plan, report);
}

void MeasureStorm(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  const int n = rig->domains(), watchers = plan.storm_watchers;
  MeasureMemory(rig, absl::StrCat("N=", FormatFigure(n), ", no watchers"), report);
  const double rss_before = rig->ServerMemory().rss_mb;
  auto stubs = Stubs(rig->target(), watchers, true);
  WatchBoard board;
  v1::WatchLifecycleRequest request;
  request.set_send_initial_state(true);
  const size_t trace = rig->server()->RpcTraceOffset();
  const absl::Time start = absl::Now();
  auto open = OpenWatchers(stubs, watchers, request, &board);
  if (!board.WaitSynced(watchers, absl::Now() + absl::Minutes(2))) {
    report->Wrong("storm: not every watcher synced");
  }
  const double seconds = absl::ToDoubleSeconds(board.last_synced() - start);
  const std::map<int, int> calls = rig->server()->RemoteCallsSince(trace);
  if (board.initials() != int64_t{n} * watchers) {
    report->Wrong(absl::StrCat("storm: ", board.initials(), " initial states of ",
                               int64_t{n} * watchers));
  }
  const std::string name = absl::StrCat(FormatFigure(watchers), " watchers, N=", FormatFigure(n));
  report->Add({"Reconnect storm (send_initial_state)", name,
               {{"all_synced_s", seconds}, {"libvirt_calls", double(testing::TotalCalls(calls))}},
               calls.empty() ? "" : testing::DescribeCalls(calls)});
  report->Target({absl::StrCat("storm, ", name, ": all synced"), seconds, 2, false, "s"});
  report->Target({absl::StrCat("storm, ", name, ": libvirt calls"), double(testing::TotalCalls(calls)), 0,
                  false, ""});
  MeasureMemory(rig, absl::StrCat("N=", FormatFigure(n), ", ", watchers, " idle watchers"), report);
  const BenchRig::Memory m = rig->ServerMemory();
  report->Add({"Memory (virtgated)", "per idle watcher",
               {{"kb", (m.rss_mb - rss_before) * 1024 / watchers}}, ""});
  report->Target({absl::StrCat("peak RSS, N=", FormatFigure(n), " + ", watchers, " watchers"),
                  m.peak_mb, 60, false, "MB"});
  open.clear();
}

}  // namespace virtgate::bench
