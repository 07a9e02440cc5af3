// BenchRig: what virtgate_bench measures against, set up once: a private
// libvirtd serving the test driver, a direct admin connection (which also
// keeps the test driver's domains alive), and the real virtgated binary as
// its own process, listening on TCP loopback as a remote orchestrator would
// reach it, with every libvirt RPC it makes traced (to count them).
#pragma once

#include <libvirt/libvirt.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/libvirt/handles.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"

namespace virtgate::bench {

class BenchRig {
 public:
  static absl::StatusOr<std::unique_ptr<BenchRig>> Start();
  ~BenchRig();

  // Defines domains up to `count` in all (every other one running), and
  // waits until virtgated's CACHED listing has every one.
  absl::Status GrowTo(int count);
  int domains() const { return domains_; }

  testing::PrivateLibvirtd* daemon() { return daemon_.get(); }
  testing::ServerProcess* server() { return server_.get(); }
  virConnectPtr admin() { return admin_.get(); }
  const std::string& target() const { return target_; }  // "127.0.0.1:port"
  // A new direct connection to the same libvirtd (read-write).
  ConnectHandle Connect() const { return daemon_->Connect(); }

  // virtgated's VmRSS and VmHWM (peak) in MiB, from /proc.
  struct Memory {
    double rss_mb = 0;
    double peak_mb = 0;
    int threads = 0;
  };
  Memory ServerMemory() const;
  // Waits until virtgated's memory trimmer has looked once more (its
  // "memory trimmer:" debug line); false if not within a minute.
  bool WaitForTrimmerPass() const;

 private:
  BenchRig() = default;

  std::unique_ptr<testing::PrivateLibvirtd> daemon_;
  ConnectHandle admin_;
  std::unique_ptr<testing::TempDir> dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::string target_;
  int domains_ = 1;  // the test driver's own
};

// Runs `once` repeatedly (it returns how many domains it listed) and
// returns each run's time in ms: at least min_runs, then until max_runs or
// `budget` is spent. A run listing other than `want` domains, or failing,
// is an error.
absl::StatusOr<std::vector<double>> TimeRuns(const std::function<absl::StatusOr<int>()>& once,
                                             int want, int min_runs, int max_runs,
                                             absl::Duration budget);

}  // namespace virtgate::bench
