// MemoryTrimmer: gives memory that glibc's malloc holds free back to the
// system, so a daemon that weathered a storm (thousands of watch streams
// opened and dropped, paged listings' snapshots expired) returns close to
// its idle footprint instead of keeping its peak.
//
// glibc returns freed memory at the top of the main heap only; what is
// freed inside it, and in the per-thread arenas gRPC's many threads use,
// stays resident until malloc_trim. Every `interval` a thread of its own
// asks mallinfo2 how much is held free and, past `min_free_bytes`, calls
// malloc_trim(0): milliseconds with 100 MB free; it locks one arena at a
// time, so a thread allocating meanwhile waits at most for that arena.
// Each look is logged at debug level ("memory trimmer: ..."). Not glibc:
// does nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace virtgate {

class MemoryTrimmer {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(10);
    size_t min_free_bytes = 8 << 20;
  };
  explicit MemoryTrimmer(Options options);
  ~MemoryTrimmer();  // stops the thread
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

  // Bytes malloc holds free now (0 when not glibc).
  static size_t FreeHeld();
  // Trims if more than `min_free_bytes` is held free; true if it did.
  static bool TrimIfWorthIt(size_t min_free_bytes);

  uint64_t trims() const;

 private:
  void Loop();

  const Options options_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t trims_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace virtgate
