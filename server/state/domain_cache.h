// DomainCache: every domain's last known record, fed by one event stream:
// the watch cache that ListDomains, GetDomain and the snapshot opening a
// watch are served from (the shape of Kubernetes' API server watch cache).
//
// - State and membership (which domains exist, their state and reason, id,
//   persistence) change only through the LifecycleFeed: live events, and
//   re-listings after a reconnect (RESTORED, then synthetic events for what
//   changed meanwhile). Every change is published to the EventHub under the
//   cache's lock, so the cache at sequence S is exactly the events up to S
//   applied: a listing or snapshot tagged S, then a watch resumed after S,
//   neither loses nor repeats a change. A listing read from libvirt never
//   writes state (it can run ahead of events still in flight).
// - Facts libvirt raises no event for (autostart, vCPUs, memory, CPU time)
//   are written by fresh reads (UpdateFacts, UpdateAutostart).
// - Drift: fresh reads report the states they saw (NoteObserved). A state
//   no event explains for longer than events take to arrive means a lost
//   event or a bug; the feed then re-lists through the same catch-up path
//   (TakeConfirmedDrift), so the cache cannot drift silently.
// - Re-listing races: events from a new registration are held while the
//   listing runs, then replayed, dropping those the listing already
//   reflects (IsNewEvent); for a few seconds after, late duplicates are
//   dropped too.
//
// Threads: OnEvent on libvirt's event loop; OnLost/BeginResync/FinishResync
// on the feed's thread; everything else from workers and gRPC threads.
// Readers copy shared immutable records under the lock and never wait on
// libvirt.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/libvirt/domain_state.h"
#include "server/state/availability.h"
#include "server/state/event_hub.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class DomainCache {
 public:
  using Record = std::shared_ptr<const v1::Domain>;

  struct Options {
    // How long after a re-listing a live event may still be one the listing
    // reflected (libvirt delivers events within milliseconds).
    absl::Duration dedupe_window = absl::Seconds(5);
    // How long a state seen by a fresh read may go unexplained by an event
    // before it counts as drift.
    absl::Duration drift_grace = absl::Seconds(5);
  };

  struct Stats {
    bool seeded = false;     // libvirt has been listed at least once
    bool current = false;    // events are flowing and the cache is in step
    uint64_t sequence = 0;   // the last sequence published
    size_t domains = 0;
    uint64_t losses = 0;     // LOST messages published
    uint64_t resyncs = 0;    // completed re-listings
    uint64_t synthetic = 0;  // synthetic events published
    uint64_t duplicates = 0;  // live events dropped as already reflected
    uint64_t drift_resyncs = 0;
    // Live events libvirt delivered, by LifecycleEventType (held, duplicate
    // and ignored ones included).
    std::array<uint64_t, v1::LifecycleEventType_ARRAYSIZE> received{};
  };

  // What a read sees: records as of `sequence`.
  struct View {
    std::vector<Record> domains;
    uint64_t sequence = 0;
    bool current = false;  // false: events are not flowing; state may be old
    bool seeded = false;   // false: libvirt never listed; nothing is known
    bool more = false;     // Read: more matching domains after these
    size_t total = 0;      // domains in the cache
  };

  // A page of the cache in (name, uuid) order.
  struct Query {
    // Only records after this (name, uuid); nullopt: from the start.
    std::optional<std::pair<std::string, std::string>> after;
    size_t limit = SIZE_MAX;
    std::function<bool(const v1::Domain&)> matches;  // null: every record
  };

  // A freshly read fact set of one domain.
  struct Facts {
    std::string uuid;
    // The sequence of the record when it was read: facts read before a
    // change (a new run, a redefinition) are not written onto the record
    // after it.
    uint64_t sequence = 0;
    uint32_t vcpus = 0;
    uint64_t memory_kib = 0;
    uint64_t max_memory_kib = 0;
    uint64_t cpu_time_ns = 0;
    // The state and reason libvirt reported. Where the state is the
    // record's, its reason replaces the one an event detail implied (a
    // driver may record a finer one); the state itself is never taken.
    std::optional<StateAndReason> seen;
  };
  // Sets `record`'s facts from `facts`, read at `read_at`.
  static void ApplyFacts(const Facts& facts, absl::Time read_at, v1::Domain* record);
  // Sets `to`'s facts (and autostart) from another record of the domain.
  static void CopyFacts(const v1::Domain& from, v1::Domain* to);

  // What a fresh read saw of a domain's state, for drift detection.
  struct Observed {
    std::string uuid;
    uint64_t sequence = 0;  // of the record the read was made for
    bool exists = true;
    v1::DomainState state = v1::DOMAIN_STATE_NOSTATE;
    uint32_t id = 0;
  };

  DomainCache(Options options, std::shared_ptr<EventHub> hub,
              std::shared_ptr<Availability> availability);

  // --- The LifecycleFeed's side.
  // A live event from libvirt: applied and published.
  void OnEvent(v1::LifecycleEvent event);
  // The event connection is gone, or could not be (re)established.
  // Publishes LOST once per outage.
  void OnLost(const std::string& reason);
  // Before registering on a new event connection (or re-listing for drift):
  // hold live events.
  void BeginResync();
  // With the full state listing read on that connection (or why it failed).
  // Success: RESTORED (if a LOST is outstanding), the catch-up events, then
  // the held events that are new; the cache is current. The very first
  // listing only seeds the cache, unless a LOST went out before it (libvirt
  // was not there at start-up): then watchers get RESTORED and a synthetic
  // DEFINED/STARTED for every domain. Failure (also: more events held than
  // kMaxHeld): the held events are dropped and the outage goes on (LOST if
  // not yet sent); the status says why, and the feed reconnects.
  absl::Status FinishResync(absl::StatusOr<std::vector<v1::Domain>> listed);
  // True (once) if a state seen by NoteObserved went unexplained past the
  // grace period: the caller re-lists.
  bool TakeConfirmedDrift(absl::Time now);

  // --- Readers.
  View Read(const Query& query) const;
  // The current records of `records` (null where the domain is gone).
  std::vector<Record> Current(const Record* begin, const Record* end) const;
  std::optional<Record> FindByUuid(const std::string& uuid, View* at = nullptr) const;
  std::optional<Record> FindByName(const std::string& name, View* at = nullptr) const;
  // The records matching `filter` (by uuid and name) and a hub subscription
  // after their sequence, taken together: nothing lost or repeated between.
  struct Subscription {
    View snapshot;
    std::shared_ptr<EventHub::Subscriber> subscriber;
  };
  absl::StatusOr<Subscription> SubscribeWithSnapshot(WatchFilter filter,
                                                     std::function<void()> wake);

  // --- Fresh reads' side.
  // Facts read at `read_at`; skipped for a domain no longer in the cache,
  // changed since the read (another sequence), or read more recently.
  void UpdateFacts(const std::vector<Facts>& facts, absl::Time read_at);
  // Autostart of every domain, from one flagged listing started at `read_at`.
  void UpdateAutostart(const absl::flat_hash_set<std::string>& autostart, absl::Time read_at);
  // When the last UpdateAutostart's listing started (InfinitePast: never).
  absl::Time autostart_read_at() const;
  void NoteObserved(const std::vector<Observed>& observed);

  Stats GetStats() const;
  // Events are flowing and the cache is in step with libvirt.
  bool current() const;
  const std::string& epoch() const { return hub_->epoch(); }
  const EventHub& hub() const { return *hub_; }

 private:
  struct Suspect {
    uint64_t sequence;  // the record's when first seen disagreeing
    absl::Time since;
  };
  using Key = std::pair<std::string, std::string>;  // (name, uuid)

  // Publishes `event` and applies it to its record.
  void PublishEventLocked(v1::LifecycleEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishConnectionLocked(v1::ConnectionChange::State state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Installs `next` for `uuid` (nullopt: removes it), keeping the order index.
  void SetRecordLocked(const std::string& uuid, std::optional<v1::Domain> next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replaces lifecycle fields with a listing's, keeping facts and sequence.
  void ApplyListingLocked(const std::vector<v1::Domain>& listed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetCurrentLocked(bool current) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ViewLocked(View* view) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const v1::Domain* FindLocked(const std::string& uuid) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const std::shared_ptr<EventHub> hub_;
  const std::shared_ptr<Availability> availability_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Record> records_ ABSL_GUARDED_BY(mu_);  // by uuid
  absl::btree_set<Key> order_ ABSL_GUARDED_BY(mu_);
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;  // the hub's last, as applied here
  bool current_ ABSL_GUARDED_BY(mu_) = false;
  bool lost_ ABSL_GUARDED_BY(mu_) = false;       // a LOST is outstanding
  bool resyncing_ ABSL_GUARDED_BY(mu_) = false;  // holding live events
  // Bounded (kMaxHeld): a re-listing that outlasts it fails, and is retried.
  std::vector<v1::LifecycleEvent> held_ ABSL_GUARDED_BY(mu_);
  bool held_overflowed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time dedupe_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time autostart_read_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<std::string, Suspect> suspects_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
