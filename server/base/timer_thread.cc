#include "server/base/timer_thread.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace virtgate {

TimerThread::TimerThread() : thread_([this] { Loop(); }) {}

TimerThread::~TimerThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void TimerThread::Schedule(absl::Time at, std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  if (pending_.empty() || at < pending_.begin()->first) changed_ = true;
  pending_.emplace(at, std::move(callback));
}

bool TimerThread::DueOrStopping() const {
  return stopping_ || changed_ || (!pending_.empty() && pending_.begin()->first <= absl::Now());
}

void TimerThread::Loop() {
  for (;;) {
    std::vector<std::function<void()>> due;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time next =
          pending_.empty() ? absl::InfiniteFuture() : pending_.begin()->first;
      mu_.AwaitWithDeadline(absl::Condition(this, &TimerThread::DueOrStopping), next);
      if (stopping_) return;
      changed_ = false;
      const absl::Time now = absl::Now();
      while (!pending_.empty() && pending_.begin()->first <= now) {
        due.push_back(std::move(pending_.begin()->second));
        pending_.erase(pending_.begin());
      }
    }
    for (auto& f : due) f();
  }
}

}  // namespace virtgate
