// WatchStream: one WatchLifecycle call read on a thread of its own, every
// message kept; and DomainView, what a client knows of each domain after
// applying the messages it received.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::e2e {

class WatchStream {
 public:
  WatchStream(v1::Hypervisor::Stub* stub, const v1::WatchLifecycleRequest& request);
  ~WatchStream();  // cancels the call and joins the reader

  std::vector<v1::WatchLifecycleResponse> Messages();
  // Waits until some message satisfies `pred` (false on timeout or end).
  bool WaitForMessage(const std::function<bool(const v1::WatchLifecycleResponse&)>& pred,
                      absl::Duration timeout);
  // The stream's status if it ended.
  std::optional<grpc::Status> Ended();

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

// "vgte2e-1-a STOPPED/destroyed" (events), "vgte2e-1-a INITIAL running",
// "SYNCED", "CONNECTION ...".
std::string Describe(const v1::WatchLifecycleResponse& m);

// A client's view of domain states, built from initial states and events the
// way a consumer of WatchLifecycle would. States are virDomainState values.
class DomainView {
 public:
  struct Entry {
    std::string name;
    int state = 0;  // virDomainState
  };
  // Applies one message; returns an error text if the message is not a
  // possible continuation of what the view knew (empty if fine).
  std::string Apply(const v1::WatchLifecycleResponse& m);
  const std::map<std::string, Entry>& domains() const { return domains_; }
  bool synced() const { return synced_; }

 private:
  std::map<std::string, Entry> domains_;  // by uuid
  bool synced_ = false;
};

}  // namespace virtgate::e2e
