// Layer 4 of the test support (the generated API only; no server code):
// WatchCollector, one WatchLifecycle call read on a thread of its own, every
// message kept. See client_view.h for checking what it received.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
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

}  // namespace virtgate::testing
