// WatchRegistry: the open WatchLifecycle streams, counted in total and per
// client (PeerKey), so that no client can hold more than its share and
// shutdown can end them all. Thread-safe.
//
// A watch is admitted before it subscribes or takes a snapshot, so a refused
// one costs nothing but the refusal.
#pragma once

#include <cstddef>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace virtgate {

class WatchReactor;

// How many watches may be open at once (--max_watches,
// --max_watches_per_peer).
struct WatchLimits {
  size_t max_watches = 10000;
  size_t max_watches_per_peer = 1000;
};

class WatchRegistry {
 public:
  explicit WatchRegistry(WatchLimits limits) : limits_(limits) {}

  // Registers `watch`, opened by `peer` (a PeerKey). RESOURCE_EXHAUSTED
  // naming the flag if the peer or the server already has its limit open;
  // UNAVAILABLE once EndAll was called. A watch refused is not registered.
  absl::Status Add(WatchReactor* watch, const std::string& peer);
  // Unregisters `watch` if it was registered.
  void Remove(WatchReactor* watch);
  // Ends every open watch with UNAVAILABLE; later Add()s are refused.
  void EndAll();
  size_t size() const;

 private:
  const WatchLimits limits_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<WatchReactor*, std::string> watches_ ABSL_GUARDED_BY(mu_);  // -> peer
  absl::flat_hash_map<std::string, size_t> per_peer_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace virtgate
