// WatchRecorder: everything the client library's WatchLifecycle reported
// (messages, resyncs, retries, its result), for a watch running on a thread
// of its own; waited on as conditions with deadlines. Links the client
// library only (layer 6, virtgate_test_client).
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate::testing {

class WatchRecorder {
 public:
  WatchRecorder() = default;
  ~WatchRecorder();  // cancels the watch and joins its thread
  WatchRecorder(const WatchRecorder&) = delete;
  WatchRecorder& operator=(const WatchRecorder&) = delete;

  // Callbacks that record into this recorder (to wrap, e.g. to block).
  WatchCallbacks Callbacks();

  // Runs client.WatchLifecycle(request) on a new thread, with Callbacks()
  // or the given ones.
  void Start(const Client& client, v1::WatchLifecycleRequest request);
  void Start(const Client& client, v1::WatchLifecycleRequest request, WatchCallbacks callbacks);

  WatchSession& session() { return session_; }

  struct Resync {
    std::string why;
    size_t at;  // messages delivered before it
  };
  struct Retry {
    absl::Status why;
    absl::Duration delay;
  };
  struct State {
    const std::vector<v1::WatchLifecycleResponse>& messages;
    const std::vector<Resync>& resyncs;
    const std::vector<Retry>& retries;
    const std::optional<absl::Status>& result;
  };

  // Waits until `condition` holds (true) or `timeout` passed (false).
  bool WaitUntil(const std::function<bool(const State&)>& condition, absl::Duration timeout);

  // A copy of the state, for assertions.
  template <typename F>
  auto With(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    return f(State{messages_, resyncs_, retries_, result_});
  }

  // Waits until an event or connection change with `sequence` (or later)
  // was delivered.
  bool WaitForSequence(uint64_t sequence, absl::Duration timeout);

  static bool HasEventOf(const State& s, absl::string_view domain, size_t from = 0);

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<v1::WatchLifecycleResponse> messages_;
  std::vector<Resync> resyncs_;
  std::vector<Retry> retries_;
  std::optional<absl::Status> result_;
  WatchSession session_;
  std::thread thread_;
};

}  // namespace virtgate::testing
