#include "server/libvirt/bulk_stats_reader.h"

#include <algorithm>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "server/base/log.h"

namespace virtgate {

// One call handed to a call thread, and what it left behind.
struct BulkStatsReader::Pending {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<std::vector<DomainStats>> result ABSL_GUARDED_BY(mu);
  // Domains busy because of this call: no longer busy once it returns.
  std::vector<BusyDomains::Call> busy ABSL_GUARDED_BY(mu);

  // Waits for the call until `deadline`; its result if it returned.
  std::optional<absl::StatusOr<std::vector<DomainStats>>> Wait(absl::Time deadline) {
    absl::MutexLock lock(&mu);
    if (!mu.AwaitWithDeadline(absl::Condition(&done), deadline)) return std::nullopt;
    return std::move(result);
  }
};

BulkStatsReader::BulkStatsReader(Options options, std::shared_ptr<ConnectionPool> pool,
                                 std::shared_ptr<DomainReads> reads)
    : options_(options),
      pool_(std::move(pool)),
      reads_(std::move(reads)),
      calls_(WorkerPool::Options{options.threads, /*max_queued=*/options.threads * 4,
                                 options.max_replacements}) {}

BulkStatsReader::~BulkStatsReader() { Shutdown(absl::Now()); }

absl::Duration BulkStatsReader::Budget(size_t domains, absl::Time deadline) const {
  absl::Duration budget =
      std::max(options_.min_budget, options_.budget_per_domain * static_cast<int64_t>(domains));
  if (deadline != absl::InfiniteFuture()) budget = std::min(budget, (deadline - absl::Now()) / 2);
  return budget;
}

absl::StatusOr<BulkStatsReader::Result> BulkStatsReader::Read(
    ConnectionPool::Lease* lease, const std::vector<std::string>& uuids, bool all_domains,
    absl::Time deadline) {
  Result out;
  std::vector<std::string> wanted;
  wanted.reserve(uuids.size());
  for (const std::string& uuid : uuids) {
    if (busy_->IsBusy(uuid)) {
      out.busy.insert(uuid);  // a call on it is stuck: do not queue another
    } else {
      wanted.push_back(uuid);
    }
  }
  if (wanted.empty()) return out;
  // The call's own references: it may outlive this function.
  std::vector<DomainHandle> doms;
  const bool whole = all_domains && out.busy.empty();
  if (!whole) {
    absl::StatusOr<std::vector<DomainHandle>> resolved =
        lease->handles().Resolve(lease->get(), wanted, reads_.get());
    if (!resolved.ok()) return resolved.status();
    for (DomainHandle& d : *resolved) {
      if (d) doms.push_back(std::move(d));  // null: undefined meanwhile
    }
    if (doms.empty()) return out;
  }
  auto pending = std::make_shared<Pending>();
  // What the call reads, with references of its own to the connection and
  // the domains (shared: a task must be copyable).
  struct Call {
    ConnectHandle conn;
    std::vector<DomainHandle> doms;
  };
  virConnectRef(lease->get());
  auto call = std::make_shared<Call>(Call{ConnectHandle(lease->get()), std::move(doms)});
  absl::Status queued = calls_.Submit(
      [pending, reads = reads_, busy = busy_, call, whole](bool cancelled) {
        absl::StatusOr<std::vector<DomainStats>> result =
            absl::UnavailableError("server shutting down");
        if (!cancelled) {
          std::vector<virDomainPtr> list;
          for (const DomainHandle& d : call->doms) list.push_back(d.get());
          result = whole ? reads->AllStats(call->conn.get(), DomainReads::kFactGroups)
                         : reads->Stats(list, DomainReads::kFactGroups);
        }
        std::vector<BusyDomains::Call> no_longer_busy;  // released after the lock
        absl::MutexLock lock(&pending->mu);
        pending->result = std::move(result);
        pending->done = true;
        no_longer_busy.swap(pending->busy);
      },
      deadline);
  if (!queued.ok()) return queued;
  const absl::Duration budget = Budget(wanted.size(), deadline);
  std::optional<absl::StatusOr<std::vector<DomainStats>>> got =
      pending->Wait(absl::Now() + budget);
  if (!got.has_value()) {
    return AvoidStuck(pending, lease, wanted, std::move(out.busy), budget, deadline);
  }
  if (!got->ok()) return got->status();
  out.stats = **std::move(got);
  return out;
}

absl::StatusOr<BulkStatsReader::Result> BulkStatsReader::AvoidStuck(
    const std::shared_ptr<Pending>& pending, ConnectionPool::Lease* lease,
    const std::vector<std::string>& uuids, absl::flat_hash_set<std::string> busy,
    absl::Duration budget, absl::Time deadline) {
  // Not back: is a domain's monitor stuck, or is libvirt just slow? Never
  // ask on this connection (see the header); look from another one.
  pool_->Retire(lease->get());
  absl::StatusOr<ConnectionPool::Lease> other =
      pool_->Acquire(std::min(deadline, absl::Now() + budget));
  std::vector<std::string> found;
  std::vector<virDomainPtr> others;
  std::vector<DomainHandle> probed;
  if (other.ok()) {
    *lease = *std::move(other);  // the caller goes on here
    absl::StatusOr<std::vector<DomainHandle>> resolved =
        lease->handles().Resolve(lease->get(), uuids, reads_.get());
    if (resolved.ok()) probed = *std::move(resolved);
    const absl::Duration occupied = std::min(absl::Milliseconds(500), budget / 2);
    for (DomainHandle& d : probed) {
      if (!d) continue;  // undefined meanwhile
      absl::StatusOr<absl::Duration> for_how_long = reads_->MonitorOccupiedFor(d.get());
      if (for_how_long.ok() && *for_how_long >= occupied) {
        found.push_back(DomainUuid(d.get()));
        LogWarning("domain ", DomainName(d.get()), ": its QEMU has not answered for ",
                   absl::FormatDuration(*for_how_long), "; reported stale until it does");
      } else {
        others.push_back(d.get());
      }
    }
  }
  if (found.empty()) {
    // Just slow, or no other connection to look from: wait for it, as long
    // as the caller does.
    std::optional<absl::StatusOr<std::vector<DomainStats>>> got = pending->Wait(deadline);
    if (got.has_value()) {
      if (!got->ok()) return got->status();
      return Result{**std::move(got), std::move(busy)};
    }
    // Still stuck, cause unknown: every domain it reads is busy until it
    // returns, so retries report them stale instead of stacking up calls.
    absl::MutexLock lock(&pending->mu);
    if (!pending->done) {
      for (const std::string& uuid : uuids) {
        pending->busy.push_back(busy_->Begin(uuid, absl::InfinitePast()));
      }
    }
    return absl::DeadlineExceededError("libvirt did not return domain stats by the deadline");
  }
  {
    absl::MutexLock lock(&pending->mu);
    if (pending->done) {  // came back meanwhile
      if (!pending->result.ok()) return pending->result.status();
      return Result{*std::move(pending->result), std::move(busy)};
    }
    for (const std::string& uuid : found) {
      pending->busy.push_back(busy_->Begin(uuid, absl::InfinitePast()));
      busy.insert(uuid);
    }
  }
  absl::StatusOr<std::vector<DomainStats>> rest = reads_->Stats(others, DomainReads::kFactGroups);
  if (!rest.ok()) return rest.status();
  return Result{*std::move(rest), std::move(busy)};
}

}  // namespace virtgate
