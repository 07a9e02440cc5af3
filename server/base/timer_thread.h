// TimerThread: runs callbacks at given times on one thread of its own, for
// the few things reactors must do later (closing a coalescing window).
// Callbacks must be short and must not block; they may run after the thing
// that scheduled them is gone, so they hold their own guard (see
// WatchReactor::Handle). Thread-safe.
#pragma once

#include <functional>
#include <map>
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

  void Schedule(absl::Time at, std::function<void()> callback);

 private:
  void Loop();
  bool DueOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;  // an earlier callback was added
  std::thread thread_;
};

}  // namespace virtgate
