#include "tests/bench/bench_rig.h"

#include <chrono>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/bench/bench_listing.h"
#include "tests/bench/bench_watchers.h"
#include "tests/support/loopback.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"

namespace virtgate::bench {

absl::StatusOr<std::unique_ptr<BenchRig>> BenchRig::Start() {
  std::unique_ptr<BenchRig> rig(new BenchRig());
  absl::StatusOr<std::unique_ptr<testing::PrivateLibvirtd>> daemon =
      testing::PrivateLibvirtd::Start();
  if (!daemon.ok()) return daemon.status();
  rig->daemon_ = *std::move(daemon);
  rig->admin_ = rig->daemon_->Connect();
  if (!rig->admin_) return absl::UnavailableError("cannot connect to the private libvirtd");
  rig->dir_ = std::make_unique<testing::TempDir>("virtgate-bench");
  testing::ServerProcess::Config config;
  config.libvirt_uri = rig->daemon_->uri();
  const int port = testing::FreeLoopbackPort();
  if (port == 0) return absl::UnavailableError("no free loopback port");
  rig->target_ = absl::StrCat("127.0.0.1:", port);
  config.target = rig->target_;
  config.log_path = absl::StrCat(rig->dir_->path(), "/virtgated.log");
  config.trace_libvirt_rpc = true;
  config.stop_grace = absl::Seconds(10);
  // Room for the storm's and the fan-out's watchers, all from one address.
  // Debug logs: the memory trimmer says when it looked (WaitForTrimmerPass).
  config.extra_flags = {"--max_watches=20000", "--max_watches_per_peer=20000",
                        "--log_level=debug"};
  absl::StatusOr<std::unique_ptr<testing::ServerProcess>> server =
      testing::ServerProcess::Start(std::move(config));
  if (!server.ok()) return server.status();
  rig->server_ = *std::move(server);
  return rig;
}

BenchRig::~BenchRig() {
  server_.reset();
  admin_.reset();
  daemon_.reset();
}

absl::Status BenchRig::GrowTo(int count) {
  if (count > domains_) {
    absl::Status s = testing::DefineDomains(admin_.get(), absl::StrCat("vm", domains_, "-"),
                                            count - domains_, 2);
    if (!s.ok()) return s;
    domains_ = count;
  }
  // virtgated's cache learns of them through events.
  auto stubs = Stubs(target_, 1, kOwnConnections);
  absl::StatusOr<int> listed;
  if (!testing::WaitFor(
          [&] {
            listed = ListThroughVirtgate(stubs[0].get(), kLargestPage, v1::READ_CONSISTENCY_CACHED);
            return listed.ok() && *listed == count;
          },
          absl::Minutes(5))) {
    return absl::DeadlineExceededError(absl::StrCat(
        "virtgated's cache did not reach ", count,
        " domains: ", listed.ok() ? absl::StrCat(*listed) : listed.status().ToString()));
  }
  return absl::OkStatus();
}

BenchRig::Memory BenchRig::ServerMemory() const {
  Memory m;
  std::ifstream status(absl::StrCat("/proc/", server_->pid(), "/status"));
  std::string line;
  while (std::getline(status, line)) {
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 2) continue;
    double v = 0;
    if (!absl::SimpleAtod(f[1], &v)) continue;
    if (f[0] == "VmRSS:") m.rss_mb = v / 1024;
    if (f[0] == "VmHWM:") m.peak_mb = v / 1024;
    if (f[0] == "Threads:") m.threads = static_cast<int>(v);
  }
  return m;
}

bool BenchRig::WaitForTrimmerPass() const {
  auto passes = [&] {
    const std::string log = server_->Log();
    size_t n = 0;
    for (size_t at = log.find("memory trimmer:"); at != std::string::npos;
         at = log.find("memory trimmer:", at + 1)) {
      ++n;
    }
    return n;
  };
  const size_t before = passes();
  return testing::WaitFor([&] { return passes() > before; }, absl::Minutes(1));
}

absl::StatusOr<std::vector<double>> TimeRuns(const std::function<absl::StatusOr<int>()>& once,
                                             int want, int min_runs, int max_runs,
                                             absl::Duration budget) {
  std::vector<double> ms;
  const absl::Time end = absl::Now() + budget;
  while (static_cast<int>(ms.size()) < max_runs &&
         (static_cast<int>(ms.size()) < min_runs || absl::Now() < end)) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<int> got = once();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!got.ok()) return got.status();
    if (*got != want) {
      return absl::DataLossError(absl::StrCat("listed ", *got, " domains of ", want));
    }
  }
  return ms;
}

}  // namespace virtgate::bench
