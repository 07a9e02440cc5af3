#include "server/base/memory_trimmer.h"

#include <malloc.h>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace virtgate {

MemoryTrimmer::MemoryTrimmer(Options options) : options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

MemoryTrimmer::~MemoryTrimmer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

size_t MemoryTrimmer::FreeHeld() {
#if defined(__GLIBC__)
  const struct mallinfo2 info = mallinfo2();
  return info.fordblks;  // free chunks, in every arena
#else
  return 0;
#endif
}

bool MemoryTrimmer::TrimIfWorthIt(size_t min_free_bytes) {
#if defined(__GLIBC__)
  // Trimmed pages still count as free chunks, and pages reused and freed
  // again between two looks would not show: trim whenever enough is free.
  // With nothing to give back it only walks the 2 arenas' free lists.
  const size_t free = FreeHeld();
  if (free < min_free_bytes) {
    LogDebug("memory trimmer: ", free >> 20, " MiB held free, under the threshold");
    return false;
  }
  malloc_trim(0);
  LogDebug("memory trimmer: gave what malloc held free (", free >> 20,
           " MiB) back to the system");
  return true;
#else
  (void)min_free_bytes;
  return false;
#endif
}

uint64_t MemoryTrimmer::trims() const {
  absl::MutexLock lock(&mu_);
  return trims_;
}

void MemoryTrimmer::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval)) return;
    }
    if (TrimIfWorthIt(options_.min_free_bytes)) {
      absl::MutexLock lock(&mu_);
      ++trims_;
    }
  }
}

}  // namespace virtgate
