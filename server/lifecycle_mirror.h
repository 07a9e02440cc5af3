// LifecycleMirror: keeps watchers whole across libvirt reconnects.
//
// Every lifecycle event reaches the EventHub through here, and the mirror
// keeps a DomainView of what it published: the picture every watcher has
// been given. When the event connection is lost it publishes one
// `connection` LOST (with the reason); when a new one is registered, it
// lists every domain, publishes RESTORED and then the synthetic events that
// take the picture to libvirt's state (a domain that vanished while we were
// blind: UNDEFINED; one that stopped: STOPPED; a new one: DEFINED/STARTED),
// so a watcher's view equals libvirt's again without re-listing.
//
// Races around the listing are handled like a send_initial_state watch:
// live events from the new registration are held while the listing runs,
// then replayed through the view, which drops those the listing already
// reflected; for a few seconds after, late duplicates are dropped too.
//
// Threads: OnEvent on libvirt's event loop; OnLost/BeginResync/FinishResync
// on the pool's maintenance thread. Publishing happens under the mirror's
// lock, so the view and the hub's sequence agree on the order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/domain_view.h"
#include "server/event_hub.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class LifecycleMirror {
 public:
  struct Stats {
    bool lost = false;          // a LOST is outstanding
    uint64_t losses = 0;        // LOST messages published
    uint64_t resyncs = 0;       // completed listings after a (re)connect
    uint64_t synthetic = 0;     // synthetic events published
    uint64_t duplicates = 0;    // live events dropped as already reflected
  };

  explicit LifecycleMirror(std::shared_ptr<EventHub> hub) : hub_(std::move(hub)) {}

  // A live event from libvirt.
  void OnEvent(v1::LifecycleEvent event);

  // The event connection is gone, or could not be (re)established.
  // Publishes LOST once per outage.
  void OnLost(const std::string& reason);

  // Before registering on a new event connection: hold live events.
  void BeginResync();
  // After registering, with the full listing read on that connection (or
  // why it failed). Success: RESTORED (if a LOST is outstanding), the
  // catch-up events, then the held events that are new. The very first
  // listing, with no outage before it, only seeds the picture. Failure: the
  // held events are dropped (the next resync lists again) and the outage
  // goes on.
  void FinishResync(absl::StatusOr<std::vector<v1::Domain>> listed);

  Stats GetStats() const;

 private:
  void PublishEventLocked(v1::LifecycleEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishConnectionLocked(v1::ConnectionChange::State state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<EventHub> hub_;
  mutable absl::Mutex mu_;
  DomainView view_ ABSL_GUARDED_BY(mu_);
  bool seeded_ ABSL_GUARDED_BY(mu_) = false;     // a listing has been taken
  bool resyncing_ ABSL_GUARDED_BY(mu_) = false;  // holding live events
  std::vector<v1::LifecycleEvent> held_ ABSL_GUARDED_BY(mu_);
  absl::Time dedupe_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
