// ListDomains latency through virtgated against the raw libvirt floor, in
// the same run, on the same private libvirtd (test driver, half of the
// domains running), at 1,001 and then 10,001 domains:
//
//   Floor/N            virConnectListAllDomains + virConnectGetAllDomainStats
//                      over one direct connection, and freeing what they
//                      returned (as any client must; virtgated does too):
//                      what a direct client does to read every domain with
//                      its stats, minus looking at them.
//   GetAllStats/N      virConnectGetAllDomainStats alone: every domain's
//                      handle and stats in one call (and the free).
//   PerDomainInfo/N    the naive client: list, then virDomainGetInfo for
//                      every domain (1,001 only).
//   FreshOnePage/N     virtgate ListDomains, FRESH, in the largest pages the
//                      server allows (5,000): one RPC at 1,001, three at 10,001.
//   FreshDefaultPages/N  the same with the default page size (500).
//   CachedOnePage/N    virtgate ListDomains, CACHED, largest pages: no
//                      libvirt call at all (checked: virtgated's own count).
//   StateStats/N       virConnectGetAllDomainStats with the state group
//                      only: the least a Prometheus libvirt exporter asks of
//                      libvirt per scrape to report each domain's state.
//   Scrape/N           GET /metrics from virtgated (every metric, one
//                      virtgate_domain_info series per domain), from its
//                      cache: no libvirt call (checked). Also reports the
//                      exposition's size and the process CPU per scrape
//                      (server and this client together: an upper bound).
//
// Each reports p50_ms/p99_ms per complete listing, and virtgate's cases
// their p50 as a multiple of the floor's in the same run (x_floor_p50). A
// result that is wrong (a listing incomplete, a CACHED listing that called
// libvirt) fails the run: exit status 1. Run it with
//   build/tests/list_domains_bench --benchmark_out=FILE --benchmark_out_format=json
// (deploy/run-tests.sh does, writing build/bench/list_domains.json).
#include <benchmark/benchmark.h>
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/bench/latencies.h"
#include "tests/bench/wrong_result.h"
#include "tests/support/metrics_text.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

constexpr unsigned int kAllGroups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                                    VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU;

using bench::Wrong;

// One private libvirtd and one virtgated, grown from 1,001 domains to
// 10,001 between the two rounds (the test domain counts as one).
struct BenchRig {
  ~BenchRig() {
    stub.reset();
    server.reset();
    direct.reset();
  }
  absl::Status GrowTo(int domains) {
    if (domains <= size) return absl::OkStatus();
    absl::Status s = testing::DefineDomains(direct.get(), absl::StrCat("vm", size, "-"),
                                            domains - size, 2);
    if (!s.ok()) return s;
    size = domains;
    // The cache learns of them through events.
    if (!testing::WaitFor([&] { return server->cache()->GetStats().domains == size_t(size); },
                          absl::Seconds(120))) {
      return absl::DeadlineExceededError("virtgated's cache did not reach every domain");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<testing::PrivateLibvirtd> daemon;
  ConnectHandle direct;
  std::unique_ptr<Server> server;
  std::unique_ptr<v1::Hypervisor::Stub> stub;
  int size = 1;  // the test driver's own domain
  std::string error;
  std::map<int, double> floor_p50_ms;  // by domain count
  std::map<int, double> state_floor_p50_ms;  // StateStats's
};

BenchRig* Rig() {
  static BenchRig* rig = [] {
    auto* r = new BenchRig();
    absl::StatusOr<std::unique_ptr<testing::PrivateLibvirtd>> d =
        testing::PrivateLibvirtd::Start();
    if (!d.ok()) {
      r->error = std::string(d.status().message());
      return r;
    }
    r->daemon = *std::move(d);
    r->direct.reset(virConnectOpen(r->daemon->uri().c_str()));
    Server::Options o;
    o.libvirt_uri = r->daemon->uri();
    o.listen = "127.0.0.1:0";
    o.metrics_listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(o);
    if (!server.ok()) {
      r->error = std::string(server.status().message());
      return r;
    }
    r->server = *std::move(server);
    r->stub = v1::Hypervisor::NewStub(
        grpc::CreateChannel(r->server->address(), grpc::InsecureChannelCredentials()));
    return r;
  }();
  return rig;
}

BenchRig* RigWith(benchmark::State& state, int domains) {
  BenchRig* rig = Rig();
  if (rig->error.empty()) {
    if (absl::Status s = rig->GrowTo(domains); !s.ok()) rig->error = std::string(s.message());
  }
  if (!rig->error.empty()) {
    Wrong(state, rig->error);
    return nullptr;
  }
  return rig;
}

void Floor(benchmark::State& state, int domains) {
  BenchRig* rig = RigWith(state, domains);
  if (rig == nullptr) return;
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    virDomainPtr* doms = nullptr;
    const int listed = virConnectListAllDomains(rig->direct.get(), &doms, 0);
    virDomainStatsRecordPtr* records = nullptr;
    const int with_stats = virConnectGetAllDomainStats(
        rig->direct.get(), kAllGroups, &records, VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
    DomainStatsList{records};
    AdoptDomainArray(doms, listed);
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (listed != domains || with_stats != domains) Wrong(state, "libvirt listing incomplete");
  }
  lat.Report(state);
  rig->floor_p50_ms[domains] = state.counters["p50_ms"];
}

// virConnectGetAllDomainStats with `groups` (and the free); the state group
// alone is also the floor Scrape is compared with.
void GetAllStats(benchmark::State& state, int domains, unsigned int groups) {
  BenchRig* rig = RigWith(state, domains);
  if (rig == nullptr) return;
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    virDomainStatsRecordPtr* records = nullptr;
    const int n = virConnectGetAllDomainStats(rig->direct.get(), groups, &records,
                                              VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
    DomainStatsList{records};
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (n != domains) Wrong(state, "libvirt listing incomplete");
  }
  lat.Report(state);
  if (groups == VIR_DOMAIN_STATS_STATE) rig->state_floor_p50_ms[domains] = state.counters["p50_ms"];
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

void Scrape(benchmark::State& state, int domains) {
  BenchRig* rig = RigWith(state, domains);
  if (rig == nullptr) return;
  const uint64_t calls_before = rig->server->libvirt_calls().Total();
  bench::Latencies lat;
  absl::StatusOr<std::string> text;
  const double cpu_before = ProcessCpuSeconds();
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    text = testing::ScrapeMetrics(rig->server->metrics_address());
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (!text.ok()) {
      Wrong(state, text.status().ToString());
      return;
    }
  }
  const double cpu = ProcessCpuSeconds() - cpu_before;
  if (testing::CountSamples(*text, "virtgate_domain_info") != domains) {
    Wrong(state, "a scrape without every domain");
  }
  const size_t bytes = text->size();
  if (rig->server->libvirt_calls().Total() != calls_before) Wrong(state, "a scrape called libvirt");
  lat.Report(state);
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["cpu_ms_per_scrape"] = cpu * 1000 / static_cast<double>(state.iterations());
  if (auto floor = rig->state_floor_p50_ms.find(domains); floor != rig->state_floor_p50_ms.end()) {
    state.counters["x_floor_p50"] = state.counters["p50_ms"] / floor->second;
  }
}

void PerDomainInfo(benchmark::State& state, int domains) {
  BenchRig* rig = RigWith(state, domains);
  if (rig == nullptr) return;
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    virDomainPtr* doms = nullptr;
    const int n = virConnectListAllDomains(rig->direct.get(), &doms, 0);
    int read = 0;
    for (auto& d : AdoptDomainArray(doms, n)) {
      virDomainInfo info;
      read += virDomainGetInfo(d.get(), &info) == 0 ? 1 : 0;
    }
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (read != domains) Wrong(state, "libvirt listing incomplete");
  }
  lat.Report(state);
}

// One complete listing through virtgate; the number of domains, or -1.
int ListThroughVirtgate(BenchRig* rig, benchmark::State& state, int page_size,
                        v1::ReadConsistency consistency) {
  v1::ListDomainsRequest req;
  req.set_page_size(page_size);
  req.set_consistency(consistency);
  int got = 0;
  for (;;) {
    grpc::ClientContext ctx;
    v1::ListDomainsResponse resp;
    grpc::Status s = rig->stub->ListDomains(&ctx, req, &resp);
    if (!s.ok()) {
      Wrong(state, s.error_message());
      return -1;
    }
    got += resp.domains_size();
    if (resp.next_page_token().empty()) return got;
    req.set_page_token(resp.next_page_token());
  }
}

void Virtgate(benchmark::State& state, int domains, int page_size,
              v1::ReadConsistency consistency) {
  BenchRig* rig = RigWith(state, domains);
  if (rig == nullptr) return;
  // Warm: the test driver's per-domain facts are read once, then kept.
  if (ListThroughVirtgate(rig, state, page_size, v1::READ_CONSISTENCY_FRESH) != domains) return;
  const uint64_t calls_before = rig->server->libvirt_calls().Total();
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const int got = ListThroughVirtgate(rig, state, page_size, consistency);
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (got < 0) return;
    if (got != domains) Wrong(state, "virtgate listing incomplete");
  }
  if (consistency == v1::READ_CONSISTENCY_CACHED &&
      rig->server->libvirt_calls().Total() != calls_before) {
    Wrong(state, "a CACHED listing called libvirt");
  }
  lat.Report(state);
  if (auto floor = rig->floor_p50_ms.find(domains); floor != rig->floor_p50_ms.end()) {
    state.counters["x_floor_p50"] = state.counters["p50_ms"] / floor->second;
  }
}

void RegisterAll() {
  for (const int n : {1001, 10001}) {
    const int iterations = n > 5000 ? 30 : 200;
    auto reg = [&](const std::string& name, auto fn, int iters) {
      benchmark::RegisterBenchmark(absl::StrCat(name, "/", n).c_str(), fn)
          ->Iterations(iters)
          ->Unit(benchmark::kMillisecond);
    };
    reg("Floor", [n](benchmark::State& s) { Floor(s, n); }, iterations);
    reg("GetAllStats", [n](benchmark::State& s) { GetAllStats(s, n, kAllGroups); }, iterations);
    reg("StateStats",
        [n](benchmark::State& s) { GetAllStats(s, n, VIR_DOMAIN_STATS_STATE); }, iterations);
    reg("Scrape", [n](benchmark::State& s) { Scrape(s, n); }, iterations);
    if (n <= 1001) {
      reg("PerDomainInfo", [n](benchmark::State& s) { PerDomainInfo(s, n); }, 20);
    }
    reg("FreshOnePage",
        [n](benchmark::State& s) { Virtgate(s, n, 5000, v1::READ_CONSISTENCY_FRESH); },
        iterations);
    reg("FreshDefaultPages",
        [n](benchmark::State& s) { Virtgate(s, n, 0, v1::READ_CONSISTENCY_FRESH); }, iterations);
    reg("CachedOnePage",
        [n](benchmark::State& s) { Virtgate(s, n, 5000, v1::READ_CONSISTENCY_CACHED); },
        iterations);
  }
}

}  // namespace
}  // namespace virtgate

int main(int argc, char** argv) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as virtgated
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  virtgate::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Stop virtgated, then the private libvirtd.
  delete virtgate::Rig();
  return virtgate::bench::ExitStatus();
}
