// CallWatchdog: cancels a client call that is still open after a timeout, so
// that a test whose behaviour broke fails (CANCELLED) instead of hanging
// until ctest kills the whole binary. For calls that deliberately set no
// deadline. Header-only: any test with grpc++.
#pragma once

#include <grpcpp/grpcpp.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace virtgate::testing {

class CallWatchdog {
 public:
  CallWatchdog(grpc::ClientContext* ctx, absl::Duration timeout)
      : thread_([this, ctx, timeout] {
          if (!done_.WaitForNotificationWithTimeout(timeout)) ctx->TryCancel();
        }) {}
  ~CallWatchdog() {
    done_.Notify();
    thread_.join();
  }
  CallWatchdog(const CallWatchdog&) = delete;
  CallWatchdog& operator=(const CallWatchdog&) = delete;

 private:
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace virtgate::testing
