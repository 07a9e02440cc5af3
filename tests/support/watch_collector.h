// Client-side helpers for WatchLifecycle tests:
//   - WatchCollector: one watch, read on a thread of its own, every message
//     kept;
//   - ClientView: what a client knows of each domain after applying the
//     messages it received (initial states, events, synthetic events), with
//     each event checked to be a possible transition from what it knew.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/support/test_domains.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::testing {

class WatchCollector {
 public:
  WatchCollector(v1::Hypervisor::Stub* stub, const v1::WatchLifecycleRequest& request,
                 bool read = true);
  ~WatchCollector();  // cancels the watch

  std::vector<v1::WatchLifecycleResponse> Messages();
  // Waits until at least n messages arrived (false on timeout or end).
  bool WaitForCount(size_t n, absl::Duration timeout);
  // Waits until some message satisfies `pred`.
  bool WaitForMessage(const std::function<bool(const v1::WatchLifecycleResponse&)>& pred,
                      absl::Duration timeout);
  // Waits for the stream to end; returns its status (nullopt: still open).
  std::optional<grpc::Status> WaitForEnd(absl::Duration timeout);
  std::string Trailer(const std::string& key);
  void Cancel() { ctx_.TryCancel(); }
  // For a collector created with read = false: start reading now.
  void StartReading();

 private:
  void ReadAll();

  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::WatchLifecycleResponse>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<v1::WatchLifecycleResponse> messages_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// "name TYPE/detail", or "connection LOST (reason)", for messages.
std::string Describe(const v1::WatchLifecycleResponse& m);

class ClientView {
 public:
  struct Domain {
    std::string name;
    bool active = false;
    bool paused = false;
    bool persistent = false;
  };

  // Applies one message. Returns a description of the problem if the event
  // is not a possible transition from what the view holds (a duplicate
  // STARTED, a STOPPED of an inactive domain, ...), else empty.
  std::string Apply(const v1::WatchLifecycleResponse& m);

  // Differences from libvirt's ground truth, one line each; empty if equal.
  std::vector<std::string> DiffFrom(const std::map<std::string, TruthEntry>& truth) const;

  const std::map<std::string, Domain>& domains() const { return domains_; }
  int lost() const { return lost_; }
  int restored() const { return restored_; }
  int synthetic() const { return synthetic_; }

 private:
  std::map<std::string, Domain> domains_;  // by uuid
  int lost_ = 0, restored_ = 0, synthetic_ = 0;
  bool connected_ = true;
};

}  // namespace virtgate::testing
