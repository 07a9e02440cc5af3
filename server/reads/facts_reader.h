// FactsReader: the fields libvirt raises no event for (vCPUs, memory, CPU
// time) of a set of domains, read from libvirt now, plus the state libvirt
// reported for each (for drift detection, and for reads that cannot rely on
// the cache).
//
// One bulk-stats call for the set (BulkStatsReader: not held up by a frozen
// guest). Where a driver's bulk stats lack vCPUs and memory (the test
// driver's carry only the state), one virDomainGetInfo per domain, kept per
// domain until the domain changes (its cache record's sequence or runtime
// id) or for 5 minutes, so a warm listing makes no per-domain calls.
//
// Thread-safe. Blocks on libvirt: call from worker threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/libvirt/bulk_stats_reader.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/domain_reads.h"
#include "server/state/domain_cache.h"

namespace virtgate {

class FactsReader {
 public:
  struct Wanted {
    std::string uuid;
    uint64_t sequence = 0;  // of its cache record (0 when read from libvirt)
  };
  enum class InfoReuse {
    kWhileUnchanged,  // listings: per-domain info is kept (see above)
    kNever,           // GetDomain: always read it again
  };
  // What was read of one wanted domain.
  struct DomainRead {
    enum class Outcome {
      kRead,        // `stats` and `facts` are libvirt's, now
      kUnreadable,  // busy (a call on it is stuck) or failed: report it stale
      kGone,        // libvirt no longer has it
    };
    Outcome outcome = Outcome::kGone;
    DomainStats stats;
    DomainCache::Facts facts;
  };
  struct Result {
    absl::Time read_at;
    std::vector<DomainRead> domains;  // one per wanted domain, in the same order
  };

  FactsReader(std::shared_ptr<BulkStatsReader> stats, std::shared_ptr<DomainReads> reads)
      : stats_(std::move(stats)), reads_(std::move(reads)) {}

  // `all_domains`: `wanted` is every domain there is (one call reads all).
  // The caller goes on with *lease (see BulkStatsReader::Read).
  absl::StatusOr<Result> Read(ConnectionPool::Lease* lease, const std::vector<Wanted>& wanted,
                              bool all_domains, InfoReuse reuse, absl::Time deadline);

  const BusyDomains& busy() const { return stats_->busy(); }

 private:
  struct Info {
    uint64_t sequence;
    uint32_t id;
    DomainInfo info;
    absl::Time fetched;
  };
  static constexpr absl::Duration kInfoTtl = absl::Minutes(5);

  // Completes the reads of the domains at `need` (whose bulk stats lack
  // vCPUs and memory) from memory or, one call each, from libvirt.
  void ReadInfo(ConnectionPool::Lease* lease, const std::vector<Wanted>& wanted,
                const std::vector<size_t>& need, InfoReuse reuse, absl::Time deadline,
                Result* result);

  const std::shared_ptr<BulkStatsReader> stats_;
  const std::shared_ptr<DomainReads> reads_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Info> info_ ABSL_GUARDED_BY(mu_);
  size_t prune_at_ ABSL_GUARDED_BY(mu_) = 1024;  // size that triggers dropping expired entries
};

}  // namespace virtgate
