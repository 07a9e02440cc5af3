#include "server/libvirt/busy_domains.h"

#include <algorithm>

namespace virtgate {

BusyDomains::Call::~Call() {
  if (owner_ == nullptr) return;
  absl::MutexLock lock(&owner_->mu_);
  owner_->running_.erase(id_);
}

BusyDomains::Call BusyDomains::Begin(const std::string& uuid, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  running_[id] = {uuid, std::min(deadline, absl::Now() + kStuckAfter)};
  return Call(this, id);
}

bool BusyDomains::IsBusy(const std::string& uuid) const {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  for (const auto& [id, r] : running_) {
    if (r.uuid == uuid && r.stuck_at <= now) return true;
  }
  return false;
}

std::vector<std::string> BusyDomains::Busy() const {
  const absl::Time now = absl::Now();
  std::vector<std::string> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, r] : running_) {
    if (r.stuck_at <= now && std::find(out.begin(), out.end(), r.uuid) == out.end()) {
      out.push_back(r.uuid);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace virtgate
