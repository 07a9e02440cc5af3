// WatchRegistry: the open WatchLifecycle streams, so shutdown can end them.
// Thread-safe.
#pragma once

#include <cstddef>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace virtgate {

class WatchReactor;

class WatchRegistry {
 public:
  void Add(WatchReactor* watch);
  void Remove(WatchReactor* watch);
  // Ends every open watch with UNAVAILABLE; later Add()s are ended at once.
  void EndAll();
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<WatchReactor*> watches_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace virtgate
