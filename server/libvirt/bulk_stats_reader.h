// BulkStatsReader: bulk stats (every group a Domain's fields need) for a set
// of domains, not held up for long by a guest whose QEMU does not answer.
//
// Why: the cpu-total, balloon and vcpu groups take each domain's job and
// query its QEMU monitor. NOWAIT helps only while another call holds that
// job; if nobody does, the call blocks in libvirtd until QEMU answers, with
// no timeout (seen with a SIGSTOPped QEMU). So:
//   1. the call runs on a thread of the reader's own bounded WorkerPool,
//      owning the caller's lease while it runs (no other call goes onto its
//      connection: libvirt 9.0 may crash when a connection several threads
//      call on dies), and the caller waits a budget (--bulk_stats_budget,
//      0.5 s, or 10 ms per domain if more);
//   2. past it, that connection is retired (libvirt's client would serve
//      other calls on it only at its next keepalive wakeup), and on another
//      one virDomainGetControlInfo (no job, no monitor) names the domains
//      whose monitor has been occupied that long;
//   3. those are busy (BusyDomains) until the stuck call returns; the others
//      are read again there, the same guarded way (so a second frozen guest
//      is found too). The caller reports the busy ones stale.
// A domain already busy is left out of the call from the start. A caller
// whose own deadline comes before the budget gets DEADLINE_EXCEEDED, and
// the call, merely slow, keeps its connection until it returns (never
// retired for that).
//
// Thread-safe. Read blocks on libvirt: call it from worker threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/libvirt/busy_domains.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/domain_reads.h"
#include "server/libvirt/worker_pool.h"

namespace virtgate {

class BulkStatsReader {
 public:
  struct Options {
    // Threads that make the calls: one per admitted call is enough
    // (--pool_size x --max_calls_per_connection); more only stand in for
    // calls stuck on frozen guests, up to max_replacements.
    int threads = 8;
    int max_replacements = 16;
    absl::Duration min_budget = absl::Milliseconds(500);
    absl::Duration budget_per_domain = absl::Milliseconds(10);
  };

  struct Result {
    std::vector<DomainStats> stats;
    // Domains with a call stuck on them (busy): not in `stats`; report them
    // from what is known, marked stale.
    absl::flat_hash_set<std::string> busy;
  };

  BulkStatsReader(Options options, std::shared_ptr<ConnectionPool> pool,
                  std::shared_ptr<DomainReads> reads);
  ~BulkStatsReader();  // Shutdown(now)

  // Stats for `uuids` on `*lease`'s connection. `all_domains`: they are
  // every domain there is, so one virConnectGetAllDomainStats serves
  // (records of other domains may come back too). If the call is left
  // running on a frozen guest, *lease is replaced by a lease on another
  // connection (the old one is retired); the caller goes on with *lease.
  // On an error, *lease may be empty (the call kept it).
  absl::StatusOr<Result> Read(ConnectionPool::Lease* lease, const std::vector<std::string>& uuids,
                              bool all_domains, absl::Time deadline);

  // Domains with a call stuck on them now.
  const BusyDomains& busy() const { return *busy_; }
  std::shared_ptr<BusyDomains> shared_busy() const { return busy_; }
  // Calls running past their deadline (stuck in libvirt) right now.
  int stuck_calls() const { return calls_.GetStats().stuck; }

  // Stops the call threads, abandoning stuck ones after `deadline`.
  void Shutdown(absl::Time deadline) { calls_.Shutdown(deadline); }

 private:
  struct Pending;
  // On a healthy host, about 3 ms per running QEMU guest.
  absl::Duration Budget(size_t domains) const;
  // Steps 2 and 3 above, after the budget ran out.
  absl::StatusOr<Result> AvoidStuck(const std::shared_ptr<Pending>& pending,
                                    ConnectionPool::Lease* lease,
                                    const std::vector<std::string>& uuids,
                                    absl::flat_hash_set<std::string> busy, absl::Time deadline);

  const Options options_;
  const std::shared_ptr<ConnectionPool> pool_;
  const std::shared_ptr<DomainReads> reads_;
  const std::shared_ptr<BusyDomains> busy_ = std::make_shared<BusyDomains>();
  WorkerPool calls_;
};

}  // namespace virtgate
