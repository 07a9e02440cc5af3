// ListDomains latency through virtgated against the raw libvirt floor, in
// the same run, on the same private libvirtd (test driver, 1,000 domains,
// half running).
//
//   BM_LibvirtBulkFloor       virConnectListAllDomains + one
//                             virDomainListGetStats over a direct connection:
//                             the least any libvirt client can do.
//   BM_LibvirtPerDomainInfo   the naive client: list, then virDomainGetInfo
//                             for every domain.
//   BM_VirtgateListDomains    one gRPC ListDomains returning every domain
//                             (page_size 5000), and the default page size
//                             followed to the end (3 pages).
//
// Each reports p50/p99 per listing (ms) as counters. Run it with
//   build/tests/list_domains_bench --benchmark_out=FILE --benchmark_out_format=json
// (deploy/run-tests.sh does, writing build/bench/list_domains.{json,txt}).
#include <benchmark/benchmark.h>
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/bench/direct_listing.h"
#include "tests/bench/latencies.h"
#include "tests/support/libvirtd_fixture.h"
#include "tests/support/test_domains.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

constexpr int kDomains = 1000;

struct BenchRig {
  ~BenchRig() {
    stub.reset();
    server.reset();
    direct.reset();
  }
  std::unique_ptr<testing::PrivateLibvirtd> daemon;
  ConnectHandle direct;
  std::unique_ptr<Server> server;
  std::unique_ptr<v1::Hypervisor::Stub> stub;
  std::string error;
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
    if (absl::Status s = testing::DefineDomains(r->direct.get(), "vm-", kDomains, 2); !s.ok()) {
      r->error = std::string(s.message());
      return r;
    }
    Server::Options o;
    o.libvirt_uri = r->daemon->uri();
    o.listen = "127.0.0.1:0";
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


#define REQUIRE_RIG(state)                 \
  BenchRig* rig = Rig();                   \
  if (!rig->error.empty()) {               \
    (state).SkipWithError(rig->error.c_str()); \
    return;                                \
  }

void BM_LibvirtBulkFloor(benchmark::State& state) {
  REQUIRE_RIG(state);
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const bench::DirectListing l = bench::ListAllWithStats(
        rig->direct.get(), VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                               VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU);
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (l.listed != kDomains + 1 || l.with_stats != l.listed) {
      state.SkipWithError("libvirt listing incomplete");
    }
  }
  lat.Report(state);
  state.counters["domains"] = kDomains + 1;
}
BENCHMARK(BM_LibvirtBulkFloor)->Iterations(300)->Unit(benchmark::kMillisecond);

void BM_LibvirtPerDomainInfo(benchmark::State& state) {
  REQUIRE_RIG(state);
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    virDomainPtr* doms = nullptr;
    const int n = virConnectListAllDomains(rig->direct.get(), &doms, 0);
    for (auto& d : AdoptDomainArray(doms, n)) {
      virDomainInfo info;
      virDomainGetInfo(d.get(), &info);
    }
    lat.Add(std::chrono::steady_clock::now() - t0);
  }
  lat.Report(state);
  state.counters["domains"] = kDomains + 1;
}
BENCHMARK(BM_LibvirtPerDomainInfo)->Iterations(30)->Unit(benchmark::kMillisecond);

void BM_VirtgateListDomains(benchmark::State& state) {
  REQUIRE_RIG(state);
  const int page_size = static_cast<int>(state.range(0));
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    v1::ListDomainsRequest req;
    req.set_page_size(page_size);
    int got = 0;
    for (;;) {
      grpc::ClientContext ctx;
      v1::ListDomainsResponse resp;
      grpc::Status s = rig->stub->ListDomains(&ctx, req, &resp);
      if (!s.ok()) {
        state.SkipWithError(s.error_message().c_str());
        return;
      }
      got += resp.domains_size();
      if (resp.next_page_token().empty()) break;
      req.set_page_token(resp.next_page_token());
    }
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (got != kDomains + 1) state.SkipWithError("virtgate listing incomplete");
  }
  lat.Report(state);
  state.counters["domains"] = kDomains + 1;
}
// 5000: every domain in one RPC; 0: the default page size (500), all pages.
BENCHMARK(BM_VirtgateListDomains)->Arg(5000)->Arg(0)->Iterations(300)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace virtgate

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Stop virtgated, then the private libvirtd.
  delete virtgate::Rig();
  return 0;
}
