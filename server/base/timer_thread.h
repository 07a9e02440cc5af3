// TimerThread: runs callbacks at given times on one thread of its own, for
// the few things reactors must do later (closing a coalescing window).
// Callbacks must be short and must not block; they may run after the thing
// that scheduled them is gone, so they hold their own guard (see
// WatchReactor::Handle). Thread-safe. A callback that is no longer wanted
// (a call's time limit, once the call is answered) is cancelled, so the
// pending set holds only what may still run.
#pragma once

#include <functional>
#include <cstdint>
#include <map>
#include <unordered_map>
#include <utility>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace virtgate {

class TimerThread {
 public:
  TimerThread();
  ~TimerThread();  // drops callbacks not yet due
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

  using Id = uint64_t;
  Id Schedule(absl::Time at, std::function<void()> callback);
  // Drops the callback if it has not started; a no-op once it has run or
  // is running. Never waits for a running callback.
  void Cancel(Id id);

 private:
  using Pending = std::multimap<absl::Time, std::pair<Id, std::function<void()>>>;
  void Loop();
  bool DueOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  Pending pending_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<Id, Pending::iterator> by_id_ ABSL_GUARDED_BY(mu_);
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;  // an earlier callback was added
  std::thread thread_;
};

}  // namespace virtgate
