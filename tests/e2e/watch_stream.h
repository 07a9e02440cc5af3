// The e2e view of a watch: WatchStream (the shared WatchCollector) and
// DomainView, what a client knows of each domain (as virDomainState) after
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
#include "tests/support/watch_collector.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::e2e {

// One WatchLifecycle call read on a thread of its own (the shared helper).
using WatchStream = testing::WatchCollector;

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
