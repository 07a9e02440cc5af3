// Lifecycle event latency: from the start of the libvirt call that causes an
// event (virDomainSuspend/Resume on a separate connection, as another tool)
// to its receipt by every WatchLifecycle watcher over gRPC, next to the same
// event's arrival at a direct libvirt callback in the same process and run
// (the floor). One event in flight at a time; p50/p99 over all receipts.
//
//   build/tests/watch_latency_bench --benchmark_out=FILE --benchmark_out_format=json
//
// Under callgrind, the measured loop alone is dumped (setup excluded), so its
// instruction count divided by the iterations is the cost of one event:
//   valgrind --tool=callgrind --instr-atstart=no
//       build/tests/watch_latency_bench --benchmark_filter=1000  (one line)
#include <benchmark/benchmark.h>
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>
#include <valgrind/callgrind.h>  // no-ops outside valgrind

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/bench/wrong_result.h"
#include "tests/support/percentile.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

// Receipts of the one event in flight, from watchers and the direct callback.
class Recorder {
 public:
  void Arm() {
    absl::MutexLock lock(&mu_);
    t0_ = absl::Now();
    watch_receipts_ = 0;
    direct_seen_ = false;
  }
  void Watch() {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    watch_us_.push_back(absl::ToDoubleMicroseconds(now - t0_));
    ++watch_receipts_;
  }
  void Direct() {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    direct_us_.push_back(absl::ToDoubleMicroseconds(now - t0_));
    direct_seen_ = true;
  }
  bool WaitAll(int watchers, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return direct_seen_ && watch_receipts_ >= watchers;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  void Report(benchmark::State& state) {
    absl::MutexLock lock(&mu_);
    const auto pct = testing::Percentile;
    state.counters["watch_p50_us"] = pct(watch_us_, 0.5);
    state.counters["watch_p99_us"] = pct(watch_us_, 0.99);
    state.counters["direct_p50_us"] = pct(direct_us_, 0.5);
    state.counters["direct_p99_us"] = pct(direct_us_, 0.99);
    state.counters["receipts"] = static_cast<double>(watch_us_.size());
  }

 private:
  absl::Mutex mu_;
  absl::Time t0_ ABSL_GUARDED_BY(mu_);
  int watch_receipts_ ABSL_GUARDED_BY(mu_) = 0;
  bool direct_seen_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<double> watch_us_ ABSL_GUARDED_BY(mu_);
  std::vector<double> direct_us_ ABSL_GUARDED_BY(mu_);
};

// One watcher on gRPC's callback client API (no thread per stream).
class BenchWatch final : public grpc::ClientReadReactor<v1::WatchLifecycleResponse> {
 public:
  BenchWatch(v1::Hypervisor::Stub* stub, Recorder* rec) : rec_(rec) {
    stub->async()->WatchLifecycle(&ctx_, &req_, this);
    StartRead(&msg_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    rec_->Watch();
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status&) override { done_.Notify(); }
  void Stop() {
    ctx_.TryCancel();
    done_.WaitForNotification();
  }

 private:
  Recorder* const rec_;
  grpc::ClientContext ctx_;
  v1::WatchLifecycleRequest req_;
  v1::WatchLifecycleResponse msg_;
  absl::Notification done_;
};

int OnDirectEvent(virConnectPtr, virDomainPtr, int, int, void* opaque) {
  static_cast<Recorder*>(opaque)->Direct();
  return 0;
}

void BM_EventLatency(benchmark::State& state) {
  const int watchers = static_cast<int>(state.range(0));
  absl::StatusOr<std::unique_ptr<testing::PrivateLibvirtd>> daemon =
      testing::PrivateLibvirtd::Start();
  if (!daemon.ok()) {
    bench::Wrong(state, std::string(daemon.status().message()));
    return;
  }
  ConnectHandle admin(virConnectOpen((*daemon)->uri().c_str()));
  ConnectHandle observer(virConnectOpenReadOnly((*daemon)->uri().c_str()));
  DomainHandle dom(virDomainDefineXML(admin.get(), testing::TestDomainXml("lat").c_str()));
  virDomainCreate(dom.get());
  Server::Options o;
  o.libvirt_uri = (*daemon)->uri();
  o.listen = "127.0.0.1:0";
  std::unique_ptr<Server> server = *Server::BuildAndStart(o);
  Recorder rec;
  const int callback = virConnectDomainEventRegisterAny(
      observer.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      VIR_DOMAIN_EVENT_CALLBACK(&OnDirectEvent), &rec, nullptr);
  auto stub = v1::Hypervisor::NewStub(
      grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  std::vector<std::unique_ptr<BenchWatch>> watches;
  for (int i = 0; i < watchers; ++i) watches.push_back(std::make_unique<BenchWatch>(stub.get(), &rec));
  if (!testing::WaitFor([&] { return server->events()->subscriber_count() == size_t(watchers); },
                        absl::Seconds(60))) {
    bench::Wrong(state, "watchers did not subscribe");
  }
  bool paused = false;
  CALLGRIND_START_INSTRUMENTATION;
  CALLGRIND_ZERO_STATS;
  for (auto _ : state) {
    rec.Arm();
    const int rc = paused ? virDomainResume(dom.get()) : virDomainSuspend(dom.get());
    paused = !paused;
    if (rc < 0 || !rec.WaitAll(watchers, absl::Seconds(30))) {
      bench::Wrong(state, "event not delivered to every watcher");
      break;
    }
  }
  CALLGRIND_DUMP_STATS_AT("measured loop");
  rec.Report(state);
  for (auto& w : watches) w->Stop();
  virConnectDomainEventDeregisterAny(observer.get(), callback);
  server.reset();
}
BENCHMARK(BM_EventLatency)->Arg(1)->Iterations(300)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_EventLatency)->Arg(1000)->Iterations(100)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace virtgate

int main(int argc, char** argv) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as virtgated
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return virtgate::bench::ExitStatus();
}
