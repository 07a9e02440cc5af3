#include "server/reads/listing_snapshots.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace virtgate {

ListingSnapshots::ListingSnapshots(Options options) : options_(options) {
  sweeper_ = std::thread([this] { SweepLoop(); });
}

ListingSnapshots::~ListingSnapshots() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  sweeper_.join();
}

void ListingSnapshots::SweepLoop() {
  for (;;) {
    std::vector<View> dropped;  // freed after the lock (declared before it)
    absl::MutexLock lock(&mu_);
    // Wakes at the least recently used snapshot's expiry, or when one is
    // kept into an empty set, or to stop.
    const absl::Time next = kept_.empty() ? absl::InfiniteFuture() : kept_.front().expires;
    auto wake = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || (!kept_.empty() && kept_.front().expires < next);
    };
    mu_.AwaitWithDeadline(absl::Condition(&wake), next);
    if (stopping_) return;
    const absl::Time now = absl::Now();
    while (!kept_.empty() && kept_.front().expires <= now) {
      dropped.push_back(DropLocked(kept_.begin()));
    }
  }
}

ListingSnapshots::View ListingSnapshots::DropLocked(std::list<Kept>::iterator it) {
  View view = std::move(it->view);
  records_ -= view->domains.size();
  by_id_.erase(it->id);
  kept_.erase(it);
  return view;
}

uint64_t ListingSnapshots::Keep(View view) {
  std::vector<View> dropped;  // freed after the lock (declared before it)
  const absl::Time now = absl::Now();
  // Room for two listings of the largest size seen, however large.
  const size_t cap = std::max(options_.max_records, 2 * view->domains.size());
  absl::MutexLock lock(&mu_);
  while (!kept_.empty() &&
         (kept_.front().expires <= now || records_ + view->domains.size() > cap)) {
    dropped.push_back(DropLocked(kept_.begin()));
  }
  uint64_t id = 0;
  while (id == 0 || by_id_.contains(id)) id = absl::Uniform<uint64_t>(rng_);
  records_ += view->domains.size();
  kept_.push_back({id, std::move(view), now + options_.ttl});
  by_id_[id] = std::prev(kept_.end());
  return id;
}

ListingSnapshots::View ListingSnapshots::Find(uint64_t id) {
  View expired;  // freed after the lock (declared before it)
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  if (it->second->expires <= now) {
    expired = DropLocked(it->second);
    return nullptr;
  }
  it->second->expires = now + options_.ttl;
  kept_.splice(kept_.end(), kept_, it->second);  // most recently used last
  return it->second->view;
}

size_t ListingSnapshots::records() const {
  absl::MutexLock lock(&mu_);
  return records_;
}

}  // namespace virtgate
