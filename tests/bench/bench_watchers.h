// Watchers for virtgate_bench: WatchLifecycle streams on gRPC's callback
// client API (no thread per stream), many per process, recording into one
// WatchBoard when each message arrived and whether any sequence was skipped.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::bench {

// What every watcher of one case received.
class WatchBoard {
 public:
  // Starts timing one event: every receipt from now on counts against t0.
  void Arm(int expected_receipts);
  // Waits until every armed receipt arrived; false at the deadline.
  bool WaitArmed(absl::Time deadline);
  // Waits until `watchers` streams have said synced; false at the deadline.
  bool WaitSynced(int watchers, absl::Time deadline);

  std::vector<double> latencies_us() const;
  absl::Time last_synced() const;
  int64_t events() const;                     // event payloads received, all watchers
  int64_t initials() const;                   // initial payloads received, all watchers
  std::vector<std::string> problems() const;  // gaps, early ends

  // Called by the watchers.
  void OnEvent(uint64_t sequence, uint64_t previous);
  void OnInitial();
  void OnSynced(uint64_t sequence);
  void OnEnded(const grpc::Status& status);

 private:
  mutable absl::Mutex mu_;
  absl::Time t0_ ABSL_GUARDED_BY(mu_);
  int armed_left_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> latencies_us_ ABSL_GUARDED_BY(mu_);
  int synced_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_synced_ ABSL_GUARDED_BY(mu_);
  int64_t events_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t initials_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
};

class BenchWatcher final : public grpc::ClientReadReactor<v1::WatchLifecycleResponse> {
 public:
  BenchWatcher(v1::Hypervisor::Stub* stub, const v1::WatchLifecycleRequest& request,
               WatchBoard* board);
  ~BenchWatcher() override { Stop(); }
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;
  // Cancels the stream and waits for its end.
  void Stop();

 private:
  WatchBoard* const board_;
  grpc::ClientContext ctx_;
  v1::WatchLifecycleRequest request_;
  v1::WatchLifecycleResponse message_;
  uint64_t last_sequence_ = 0;
  std::atomic<bool> stopping_{false};
  absl::Notification done_;
};

enum Connections { kOwnConnections, kOneConnection };

// `count` stubs for `target`: each on a channel and TCP connection of its
// own (a local subchannel pool; gRPC would otherwise share one connection
// among channels with the same target and arguments), or all on one.
std::vector<std::unique_ptr<v1::Hypervisor::Stub>> Stubs(const std::string& target, int count,
                                                         Connections connections);

}  // namespace virtgate::bench
