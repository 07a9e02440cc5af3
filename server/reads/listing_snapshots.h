// ListingSnapshots: the cache views that paged listings are served from, so
// every page of one listing reflects the event sequence of its first page
// (as a Kubernetes continue token pins the list's resourceVersion): a client
// resumes one watch from that sequence, and applying its events to all the
// pages gives libvirt's state exactly. A listing that fits in one page keeps
// none.
//
// A snapshot is a vector of shared immutable records (no copies of the
// domains). But a record it holds outlives the cache's next version of it,
// and a FRESH read makes a new version of every domain it reads (new
// facts), so each paged FRESH listing pins a whole generation of records
// (about 330 bytes each) until its snapshot goes. Bounded: at most
// `max_records` records held in all (40,000: about 13 MB; four paged
// listings of 10,000 domains; or two of the largest listing, if that is
// more), the least recently used snapshot dropped
// first, and each dropped `ttl` after its last use: by a thread of its own
// (so an idle server lets go of them too) and at every Keep and Find. A page whose snapshot is gone
// is served from the live cache instead; its response then names its own, later sequence (see
// ListDomainsResponse). The cap was 1,000,000 records: 330 MB held after a
// minute of paged listings of 10,000 domains (deploy/bench.sh).
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/state/domain_cache.h"

namespace virtgate {

class ListingSnapshots {
 public:
  using View = std::shared_ptr<const DomainCache::View>;

  struct Options {
    size_t max_records = 40000;
    absl::Duration ttl = absl::Seconds(60);
  };

  explicit ListingSnapshots(Options options);
  ~ListingSnapshots();  // stops the sweeping thread

  // Keeps `view` (every domain of the listing, in order); returns its id
  // (never 0).
  uint64_t Keep(View view);
  // The view kept as `id`, if it still is (its ttl starts again).
  View Find(uint64_t id);

  size_t records() const;

 private:
  struct Kept {
    uint64_t id;
    View view;
    absl::Time expires;
  };
  // Forgets the snapshot; returns its view, for the caller to free after
  // the lock.
  View DropLocked(std::list<Kept>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops expired snapshots as they expire, until the destructor.
  void SweepLoop();

  const Options options_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<Kept> kept_ ABSL_GUARDED_BY(mu_);  // least recently used first
  absl::flat_hash_map<uint64_t, std::list<Kept>::iterator> by_id_ ABSL_GUARDED_BY(mu_);
  size_t records_ ABSL_GUARDED_BY(mu_) = 0;
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  std::thread sweeper_;  // last: started after the members it reads
};

}  // namespace virtgate
