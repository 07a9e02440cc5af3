// ListDomains latency for 20 running QEMU guests (TCG) under the host's
// system libvirtd, through the real virtgated, next to a direct libvirt bulk
// listing in the same run.
//
//   BM_DirectListAllPlusBulkStats  virConnectListAllDomains + one
//                                  virDomainListGetStats (state, cpu-total,
//                                  balloon, vcpu; NOWAIT): what virtgated
//                                  does per page, minus the two flagged lists.
//   BM_DirectGetAllDomainStats     one virConnectGetAllDomainStats, same
//                                  groups: the least any client can do.
//   BM_DirectGetAllDomainStatsStateOnly  the state group alone (no monitor).
//   BM_VirtgateListDomains         one gRPC ListDomains (default page size,
//                                  all domains in one page) to virtgated
//                                  serving qemu:///system.
//
// Each reports p50/p99 per listing (ms) and the number of domains as
// counters. Run by deploy/run-tests.sh (label bench), or directly:
//   build/tests/e2e/qemu_list_bench --benchmark_out=build/bench/qemu_list.json
//       --benchmark_out_format=json
// Where the machine cannot run QEMU guests, it prints "QEMU benchmark
// skipped: <why>" and exits 77 (ctest reports it skipped), or 1 under
// VIRTGATE_NO_SKIPS=1 (CI).
#include <benchmark/benchmark.h>
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/libvirt/handles.h"
#include "tests/bench/direct_listing.h"
#include "tests/bench/wrong_result.h"
#include "tests/bench/latencies.h"
#include "tests/e2e/qemu_guests.h"
#include "tests/e2e/system_libvirtd.h"
#include "tests/support/libvirt_direct.h"
#include "tests/support/server_process.h"
#include "tests/support/skips.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::e2e {
namespace {

using testing::DeadlineIn;
using testing::LastError;
using testing::ServerProcess;
using testing::WaitFor;

constexpr int kGuests = 20;
constexpr unsigned int kGroups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                                 VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU;

struct Rig {
  // Torn down in reverse: virtgated, the guests, then the daemon (if ours).
  std::unique_ptr<SystemLibvirtd> host;
  std::unique_ptr<GuestSet> guests;
  std::unique_ptr<ServerProcess> server;
  ConnectHandle direct;  // read-only, like virtgated's
  int domains = 0;       // on the host, ours included
  std::string skip;      // the machine cannot run QEMU guests
  std::string error;     // something broke
  ~Rig() {
    direct.reset();
    server.reset();
    guests.reset();
    host.reset();
  }
};

Rig* rig = nullptr;

void Prepare(Rig* r) {
  absl::StatusOr<std::unique_ptr<SystemLibvirtd>> host = SystemLibvirtd::Ensure();
  if (!host.ok()) {
    (host.status().code() == absl::StatusCode::kFailedPrecondition ? r->skip : r->error) =
        std::string(host.status().message());
    return;
  }
  r->host = *std::move(host);
  std::fprintf(stderr, "[qemu bench host] %s\n", r->host->summary().c_str());
  absl::StatusOr<std::unique_ptr<GuestSet>> guests = GuestSet::Create();
  if (!guests.ok()) {
    r->error = guests.status().ToString();
    return;
  }
  r->guests = *std::move(guests);
  GuestSet::SweepLeftovers(r->guests->conn());
  for (int i = 0; i < kGuests; ++i) {
    absl::StatusOr<std::string> name = r->guests->Define(absl::StrFormat("bench%02d", i));
    absl::Status started = name.ok() ? r->guests->Start(*name) : name.status();
    if (!started.ok()) {
      r->error = started.ToString();
      return;
    }
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(SystemServerConfig());
  if (!server.ok()) {
    r->error = server.status().ToString();
    return;
  }
  r->server = *std::move(server);
  r->direct.reset(virConnectOpenReadOnly(kSystemUri));
  if (!r->direct) {
    r->error = LastError("open qemu:///system").ToString();
    return;
  }
  r->domains = virConnectNumOfDomains(r->direct.get()) + virConnectNumOfDefinedDomains(r->direct.get());
  // Measure idle guests, not booting ones: wait (up to a minute) until the
  // guests together use under a quarter of a core, i.e. SeaBIOS has found no
  // boot device and halted (20 idle guests use about 0.12 cores here).
  auto cpu_ns = [&] {
    uint64_t total = 0;
    virDomainStatsRecordPtr* records = nullptr;
    const int n = virConnectGetAllDomainStats(r->direct.get(), VIR_DOMAIN_STATS_CPU_TOTAL,
                                              &records, VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE);
    DomainStatsList owned(records);
    for (int i = 0; i < n; ++i) {
      for (int p = 0; p < records[i]->nparams; ++p) {
        if (std::string(records[i]->params[p].field) == "cpu.time") {
          total += records[i]->params[p].value.ul;
        }
      }
    }
    return total;
  };
  uint64_t last = cpu_ns();
  absl::Time last_at = absl::Now();
  const absl::Time settle_start = last_at;
  double cores = 0;
  const bool settled = WaitFor(
      [&] {
        if (absl::Now() - last_at < absl::Seconds(1)) return false;
        const uint64_t now = cpu_ns();
        cores = static_cast<double>(now - last) /
                             absl::ToDoubleNanoseconds(absl::Now() - last_at);
        last = now;
        last_at = absl::Now();
        return cores < 0.25;
      },
      absl::Minutes(1));
  std::fprintf(stderr, "[qemu bench] guests %s at %.2f cores after %s\n",
               settled ? "idle" : "still busy", cores,
               absl::FormatDuration(absl::Now() - settle_start).c_str());
}


bool Ready(benchmark::State& state) {
  if (!rig->skip.empty()) {
    state.SkipWithError(("QEMU benchmark skipped: " + rig->skip).c_str());
    return false;
  }
  if (!rig->error.empty()) {
    bench::Wrong(state, rig->error);
    return false;
  }
  return true;
}

// The figures every benchmark here reports.
void Report(benchmark::State& state, bench::Latencies& lat) {
  lat.Report(state);
  state.counters["domains"] = rig->domains;
  state.counters["running_qemu_guests"] = kGuests;
}

void BM_DirectListAllPlusBulkStats(benchmark::State& state) {
  if (!Ready(state)) return;
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const bench::DirectListing l = bench::ListAllWithStats(rig->direct.get(), kGroups);
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (l.listed < kGuests || l.with_stats != l.listed) {
      bench::Wrong(state, "libvirt listing incomplete");
      return;
    }
  }
  Report(state, lat);
}
BENCHMARK(BM_DirectListAllPlusBulkStats)->Iterations(200)->Unit(benchmark::kMillisecond);

// One virConnectGetAllDomainStats of `groups` per iteration.
void TimeGetAllDomainStats(benchmark::State& state, unsigned int groups) {
  if (!Ready(state)) return;
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    virDomainStatsRecordPtr* records = nullptr;
    const int m = virConnectGetAllDomainStats(rig->direct.get(), groups, &records,
                                              VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
    DomainStatsList free_records(records);
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (m < kGuests) {
      bench::Wrong(state, "libvirt bulk stats incomplete");
      return;
    }
  }
  Report(state, lat);
}

void BM_DirectGetAllDomainStats(benchmark::State& state) { TimeGetAllDomainStats(state, kGroups); }
BENCHMARK(BM_DirectGetAllDomainStats)->Iterations(200)->Unit(benchmark::kMillisecond);

// For comparison: the state group alone never takes a domain's job or asks
// its QEMU monitor; the difference to the full groups is the monitor's cost.
void BM_DirectGetAllDomainStatsStateOnly(benchmark::State& state) {
  TimeGetAllDomainStats(state, VIR_DOMAIN_STATS_STATE);
}
BENCHMARK(BM_DirectGetAllDomainStatsStateOnly)->Iterations(200)->Unit(benchmark::kMillisecond);

void BM_VirtgateListDomains(benchmark::State& state) {
  if (!Ready(state)) return;
  bench::Latencies lat;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::ListDomainsResponse resp;
    grpc::Status s = rig->server->stub()->ListDomains(&ctx, v1::ListDomainsRequest(), &resp);
    lat.Add(std::chrono::steady_clock::now() - t0);
    if (!s.ok()) {
      bench::Wrong(state, s.error_message());
      return;
    }
    if (resp.domains_size() < kGuests || !resp.next_page_token().empty()) {
      bench::Wrong(state, "virtgate listing incomplete");
      return;
    }
  }
  Report(state, lat);
}
BENCHMARK(BM_VirtgateListDomains)->Iterations(200)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace virtgate::e2e

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // On the main thread: the daemons this may start die with it.
  virtgate::e2e::rig = new virtgate::e2e::Rig();
  virtgate::e2e::Prepare(virtgate::e2e::rig);
  if (!virtgate::e2e::rig->skip.empty()) {
    std::printf("QEMU benchmark skipped: %s\n", virtgate::e2e::rig->skip.c_str());
    delete virtgate::e2e::rig;
    // ctest's SKIP_RETURN_CODE; in CI (VIRTGATE_NO_SKIPS=1) a failure.
    return virtgate::testing::SkipsAreFailures() ? 1 : virtgate::testing::kSkipExitCode;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const bool failed = !virtgate::e2e::rig->error.empty();
  if (failed) std::fprintf(stderr, "QEMU benchmark failed: %s\n", virtgate::e2e::rig->error.c_str());
  delete virtgate::e2e::rig;
  return failed ? 1 : virtgate::bench::ExitStatus();
}
