#include "server/libvirt/call_counts.h"

namespace virtgate {

void CallCounts::Add(absl::string_view procedure, uint64_t n) {
  absl::MutexLock lock(&mu_);
  counts_[procedure] += n;
}

uint64_t CallCounts::Get(absl::string_view procedure) const {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(procedure);
  return it == counts_.end() ? 0 : it->second;
}

uint64_t CallCounts::Total() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [name, n] : counts_) total += n;
  return total;
}

std::map<std::string, uint64_t> CallCounts::All() const {
  absl::MutexLock lock(&mu_);
  return std::map<std::string, uint64_t>(counts_.begin(), counts_.end());
}

}  // namespace virtgate
