#include "server/base/memory_trimmer.h"

#include <malloc.h>

#include <algorithm>

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

bool MemoryTrimmer::TrimIfWorthIt(size_t min_free_bytes, size_t* trimmed_at) {
#if defined(__GLIBC__)
  // Trimmed pages still count as free chunks: trim again only once more
  // was freed since.
  const size_t free = FreeHeld();
  if (free < min_free_bytes || free < *trimmed_at + (1 << 20)) {
    *trimmed_at = std::min(*trimmed_at, free);
    return false;
  }
  malloc_trim(0);
  *trimmed_at = free;
  LogDebug("memory: gave ", free >> 20, " MiB that malloc held free back to the system");
  return true;
#else
  (void)min_free_bytes;
  (void)trimmed_at;
  return false;
#endif
}

uint64_t MemoryTrimmer::trims() const {
  absl::MutexLock lock(&mu_);
  return trims_;
}

void MemoryTrimmer::Loop() {
  size_t trimmed_at = 0;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval)) return;
    }
    if (TrimIfWorthIt(options_.min_free_bytes, &trimmed_at)) {
      absl::MutexLock lock(&mu_);
      ++trims_;
    }
  }
}

}  // namespace virtgate
