#include "server/lifecycle_mirror.h"

#include <utility>

#include "server/log.h"

namespace virtgate {
namespace {

// How long after a resync a live event may still be one the listing
// reflected. libvirt delivers events within milliseconds; this is generous.
constexpr absl::Duration kDedupeWindow = absl::Seconds(5);

}  // namespace

void LifecycleMirror::OnEvent(v1::LifecycleEvent event) {
  absl::MutexLock lock(&mu_);
  if (resyncing_) {
    held_.push_back(std::move(event));
    return;
  }
  // The view is kept current with everything published; only just after a
  // resync may it drop an event as already reflected in the listing.
  const bool is_new = view_.IsNew(event);
  if (!is_new && absl::Now() < dedupe_until_) {
    ++stats_.duplicates;
    return;
  }
  PublishEventLocked(std::move(event));
}

void LifecycleMirror::OnLost(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  resyncing_ = false;
  held_.clear();
  if (stats_.lost) return;
  stats_.lost = true;
  ++stats_.losses;
  PublishConnectionLocked(v1::ConnectionChange::STATE_LOST, reason);
}

void LifecycleMirror::BeginResync() {
  absl::MutexLock lock(&mu_);
  resyncing_ = true;
  held_.clear();
}

void LifecycleMirror::FinishResync(absl::StatusOr<std::vector<v1::Domain>> listed) {
  absl::MutexLock lock(&mu_);
  resyncing_ = false;
  std::vector<v1::LifecycleEvent> held;
  held.swap(held_);
  if (!listed.ok()) {
    LogWarning("cannot re-list domains after connecting: ", listed.status().message());
    if (!stats_.lost) {
      stats_.lost = true;
      ++stats_.losses;
      PublishConnectionLocked(v1::ConnectionChange::STATE_LOST,
                              std::string(listed.status().message()));
    }
    return;
  }
  ++stats_.resyncs;
  if (stats_.lost) {
    stats_.lost = false;
    PublishConnectionLocked(v1::ConnectionChange::STATE_RESTORED, "");
  }
  if (!seeded_ && stats_.losses == 0) {
    for (const v1::Domain& d : *listed) view_.Add(d);  // start-up: nothing was missed
  } else {
    std::vector<v1::LifecycleEvent> missed = view_.CatchUp(*listed);
    if (!missed.empty()) {
      LogInfo("reconnected: ", missed.size(),
              " lifecycle changes happened while disconnected; sent as synthetic events");
    }
    for (v1::LifecycleEvent& e : missed) {
      ++stats_.synthetic;
      PublishEventLocked(std::move(e));
    }
  }
  seeded_ = true;
  for (v1::LifecycleEvent& e : held) {
    if (!view_.IsNew(e)) {
      ++stats_.duplicates;
      continue;
    }
    PublishEventLocked(std::move(e));
  }
  dedupe_until_ = absl::Now() + kDedupeWindow;
}

LifecycleMirror::Stats LifecycleMirror::GetStats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void LifecycleMirror::PublishEventLocked(v1::LifecycleEvent event) {
  v1::WatchLifecycleResponse m;
  *m.mutable_event() = std::move(event);
  hub_->Publish(std::move(m));
}

void LifecycleMirror::PublishConnectionLocked(v1::ConnectionChange::State state,
                                              const std::string& reason) {
  v1::WatchLifecycleResponse m;
  m.mutable_connection()->set_state(state);
  m.mutable_connection()->set_reason(reason);
  hub_->Publish(std::move(m));
}

}  // namespace virtgate
