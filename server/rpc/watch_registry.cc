#include "server/rpc/watch_registry.h"

#include "server/rpc/watch_reactor.h"

namespace virtgate {

void WatchRegistry::Add(WatchReactor* watch) {
  bool end_now;
  {
    absl::MutexLock lock(&mu_);
    watches_.insert(watch);
    end_now = ended_;
  }
  if (end_now) watch->EndForShutdown();
}

void WatchRegistry::Remove(WatchReactor* watch) {
  absl::MutexLock lock(&mu_);
  watches_.erase(watch);
}

void WatchRegistry::EndAll() {
  // Under the lock: a watch cannot be deleted (OnDone removes it first)
  // while we end it.
  absl::MutexLock lock(&mu_);
  ended_ = true;
  for (WatchReactor* w : watches_) w->EndForShutdown();
}

size_t WatchRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return watches_.size();
}

}  // namespace virtgate
