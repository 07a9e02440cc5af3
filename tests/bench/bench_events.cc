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

// One latency case: `watchers` streams, on connections of their own or on one.
void LatencyCase(BenchRig* rig, const BenchPlan& plan, int watchers, Connections connections,
                 virDomainPtr dom, DirectClock* direct, BenchReport* report) {
  const std::string name = absl::StrCat(watchers, watchers == 1 ? " watcher" : " watchers",
                                        watchers == 1                    ? ""
                                        : connections == kOwnConnections ? ", a channel each"
                                                                         : ", one channel");
  auto stubs = Stubs(rig->target(), watchers, connections);
  WatchBoard board;
  auto open = OpenWatchers(stubs, watchers, v1::WatchLifecycleRequest(), &board);
  if (!WaitForStreams(rig, watchers)) {
    report->Wrong(absl::StrCat(name, ": the watches did not open"));
    return;
  }
  const size_t direct_before = direct->us().size();
  const int events = watchers >= 1000 ? plan.events_per_case / 2 : plan.events_per_case;
  virDomainInfo info;
  bool paused = virDomainGetInfo(dom, &info) == 0 && info.state == VIR_DOMAIN_PAUSED;
  for (int i = 0; i < events; ++i, paused = !paused) {
    // The clock starts with the call that causes the event.
    board.Arm(watchers);
    direct->Arm();
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
  const std::vector<std::string> problems = board.problems();
  if (!problems.empty()) {
    report->Wrong(absl::StrCat(name, ": ", problems.size(), " problem(s), first: ", problems[0]));
  }
  const double p50 = Percentile(us, 0.5), p99 = Percentile(us, 0.99);
  report->Add({"Event latency",
               name,
               {{"p50_us", p50},
                {"p99_us", p99},
                {"max_us", Percentile(us, 1)},
                {"direct_p50_us", Percentile(d, 0.5)},
                {"direct_p99_us", Percentile(d, 0.99)},
                {"receipts", double(us.size())}},
               ""});
  if (watchers == 1) {
    report->Target({"1 watcher: p50 over the direct callback's", p50 - Percentile(d, 0.5), 300,
                    BenchTarget::kAtMost, "µs"});
  } else if (watchers == plan.watchers.back()) {
    report->Target({absl::StrCat(name, ": p99"), p99 / 1000, 2.5, BenchTarget::kAtMost, "ms"});
  }
}

// One paced run: `actors` threads suspend and resume domains of their own,
// on connections of their own, at `rate` events/s in all, for `time`;
// every watcher must get every event, in sequence. The events/s achieved,
// or why some watcher lost one (its queue overflowed and its stream ended,
// or a sequence was skipped) or an actor failed.
absl::StatusOr<double> PacedRun(BenchRig* rig, const BenchPlan& plan, int rate) {
  const int watchers = plan.sustained_watchers;
  auto stubs = Stubs(rig->target(), watchers, kOwnConnections);
  WatchBoard board;
  auto open = OpenWatchers(stubs, watchers, v1::WatchLifecycleRequest(), &board);
  if (!WaitForStreams(rig, watchers)) return absl::DeadlineExceededError("watches did not open");
  // Connected and looked up before the clock starts.
  std::vector<ConnectHandle> conns;
  std::vector<DomainHandle> doms;
  for (int a = 0; a < plan.actors; ++a) {
    conns.push_back(rig->Connect());
    // vm1-00000, vm1-00002, ...: defined running by GrowTo.
    doms.emplace_back(
        virDomainLookupByName(conns.back().get(), absl::StrFormat("vm1-%05d", 2 * a).c_str()));
    if (!doms.back()) return testing::LastError("an actor's domain");
  }
  std::atomic<int64_t> actions{0};
  absl::Mutex mu;
  absl::Status failed;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + absl::ToChronoNanoseconds(plan.sustained_time);
  const auto gap = std::chrono::nanoseconds(int64_t{1000000000} * plan.actors / rate);
  std::vector<std::thread> actors;
  for (int a = 0; a < plan.actors; ++a) {
    actors.emplace_back([&, dom = doms[a].get()] {
      bool paused = false;
      // Pacing the load (not synchronisation): the next action's due time.
      for (auto due = start; due < end; due += gap, paused = !paused) {
        std::this_thread::sleep_until(due);
        if ((paused ? virDomainResume(dom) : virDomainSuspend(dom)) < 0) {
          absl::MutexLock lock(&mu);
          failed = testing::LastError(paused ? "virDomainResume" : "virDomainSuspend");
          break;
        }
        ++actions;
      }
      if (paused && virDomainResume(dom) == 0) ++actions;  // leave it running
    });
  }
  for (std::thread& t : actors) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t want = actions.load() * watchers;
  testing::WaitFor([&] { return board.events() >= want || !board.problems().empty(); },
                   absl::Seconds(30));
  open.clear();
  if (!failed.ok()) return failed;
  if (!board.problems().empty()) return absl::DataLossError(board.problems().front());
  if (board.events() < want) {
    return absl::DataLossError(
        absl::StrCat("watchers received ", board.events(), " of ", want, " events"));
  }
  return double(actions.load()) / seconds;
}

// The highest paced rate at which every watcher got every event.
void SustainedCase(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  const std::string name =
      absl::StrCat(plan.sustained_watchers, " watchers (a channel each), ", plan.actors, " actors");
  double best = 0;
  std::string why = "every rate tried passed";
  for (int rate = 250; rate <= 16000; rate *= 2) {
    absl::StatusOr<double> achieved = PacedRun(rig, plan, rate);
    if (!achieved.ok()) {
      why = absl::StrCat("at ", rate, "/s: ", achieved.status().message());
      break;
    }
    best = std::max(best, *achieved);
    if (*achieved < 0.8 * rate) {
      why = absl::StrCat("libvirt's test driver did ", FormatFigure(*achieved), "/s of ", rate);
      break;
    }
  }
  if (best == 0) report->Wrong(absl::StrCat("events/s: no rate without loss: ", why));
  report->Add({"Events sustained with no loss",
               name,
               {{"events_per_s", best}, {"deliveries_per_s", best * plan.sustained_watchers}},
               absl::StrCat("gap-free at every watcher; next step: ", why)});
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
    LatencyCase(rig, plan, watchers, kOwnConnections, dom.get(), &direct, report);
    if (watchers > 1) {
      LatencyCase(rig, plan, watchers, kOneConnection, dom.get(), &direct, report);
    }
  }
  virConnectDomainEventDeregisterAny(observer.get(), callback);
  SustainedCase(rig, plan, report);
}

void MeasureStorm(BenchRig* rig, const BenchPlan& plan, BenchReport* report) {
  const int n = rig->domains(), watchers = plan.storm_watchers;
  // Idle watchers first: what each one costs, with nothing to send. Each
  // reading waits for virtgated's memory trimmer (every 10 s) to look once
  // more, so both are taken after a trim.
  if (plan.memory_after_trim && !rig->WaitForTrimmerPass()) {
    report->Wrong("virtgated's memory trimmer did not run");
  }
  MeasureMemory(rig, absl::StrCat("N=", FormatFigure(n), ", no watchers"), report);
  const double rss_before = rig->ServerMemory().rss_mb;
  auto stubs = Stubs(rig->target(), watchers, kOwnConnections);
  {
    WatchBoard idle;
    auto open = OpenWatchers(stubs, watchers, v1::WatchLifecycleRequest(), &idle);
    if (!WaitForStreams(rig, watchers)) report->Wrong("idle watchers did not open");
    if (plan.memory_after_trim && !rig->WaitForTrimmerPass()) {
      report->Wrong("virtgated's memory trimmer did not run");
    }
    const std::string what = absl::StrCat("N=", FormatFigure(n), ", ", watchers, " idle watchers");
    MeasureMemory(rig, what, report);
    const BenchRig::Memory m = rig->ServerMemory();
    report->Add({"Memory (virtgated)",
                 "per idle watcher (a channel each)",
                 {{"kb", (m.rss_mb - rss_before) * 1024 / watchers}},
                 ""});
    report->Target({absl::StrCat("peak RSS since start (VmHWM), ", what), m.peak_mb, 60,
                    BenchTarget::kAtMost, "MB"});
  }
  if (!WaitForStreams(rig, 0)) report->Wrong("idle watchers did not close");
  WatchBoard board;
  v1::WatchLifecycleRequest request;
  request.set_send_initial_state(true);
  const size_t trace = rig->server()->RpcTraceOffset();
  const absl::Time start = absl::Now();
  auto open = OpenWatchers(stubs, watchers, request, &board);
  const bool synced = board.WaitSynced(watchers, absl::Now() + plan.storm_limit);
  const double seconds =
      absl::ToDoubleSeconds((synced ? board.last_synced() : absl::Now()) - start);
  const std::map<int, int> calls = rig->server()->RemoteCallsSince(trace);
  if (synced && board.initials() != int64_t{n} * watchers) {
    report->Wrong(
        absl::StrCat("storm: ", board.initials(), " initial states of ", int64_t{n} * watchers));
  }
  const std::string name = absl::StrCat(FormatFigure(watchers), " watchers, N=", FormatFigure(n));
  report->Add(
      {"Reconnect storm (send_initial_state)",
       name,
       {{"all_synced_s", seconds},
        {"initial_states_per_s", double(board.initials()) / seconds},
        {"libvirt_calls", double(testing::TotalCalls(calls))}},
       synced ? testing::DescribeCalls(calls)
              : absl::StrCat("not all synced when the bench stopped waiting: ", board.initials(),
                             " of ", int64_t{n} * watchers, " initial states sent")});
  report->Target(
      {absl::StrCat("storm, ", name, ": all synced"), seconds, 2, BenchTarget::kAtMost, "s"});
  report->Target({absl::StrCat("storm, ", name, ": libvirt calls"),
                  double(testing::TotalCalls(calls)), 0, BenchTarget::kAtMost, ""});
  MeasureMemory(rig, absl::StrCat("N=", FormatFigure(n), ", just after the storm"), report);
  open.clear();
}

}  // namespace virtgate::bench
