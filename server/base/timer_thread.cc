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

TimerThread::Id TimerThread::Schedule(absl::Time at, std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  if (pending_.empty() || at < pending_.begin()->first) changed_ = true;
  const Id id = next_id_++;
  by_id_.emplace(id, pending_.emplace(at, std::make_pair(id, std::move(callback))));
  return id;
}

void TimerThread::Cancel(Id id) {
  std::function<void()> dropped;  // destroyed outside the lock
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  dropped = std::move(it->second->second.second);
  pending_.erase(it->second);
  by_id_.erase(it);
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
        by_id_.erase(pending_.begin()->second.first);
        due.push_back(std::move(pending_.begin()->second.second));
        pending_.erase(pending_.begin());
      }
    }
    for (auto& f : due) f();
  }
}

}  // namespace virtgate
