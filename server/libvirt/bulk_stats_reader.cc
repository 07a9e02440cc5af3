#include "server/libvirt/bulk_stats_reader.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "server/base/log.h"

namespace virtgate {

// One call handed to a call thread. It owns its connection's lease while it
// runs, so no other call is let onto that connection beside it (see
// ConnectionPool on why); a caller that stops waiting leaves the lease with
// the call, which releases it when it returns.
struct BulkStatsReader::Pending {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  bool abandoned ABSL_GUARDED_BY(mu) = false;  // the caller stopped waiting
  absl::StatusOr<std::vector<DomainStats>> result ABSL_GUARDED_BY(mu);
  std::optional<ConnectionPool::Lease> lease ABSL_GUARDED_BY(mu);
  // Domains busy because of this call: no longer busy once it returns.
  std::vector<BusyDomains::Call> busy ABSL_GUARDED_BY(mu);

  // The call's result, and its lease back into *lease, if it returns by
  // `deadline`.
  std::optional<absl::StatusOr<std::vector<DomainStats>>> Wait(absl::Time deadline,
                                                                ConnectionPool::Lease* lease) {
    absl::MutexLock lock(&mu);
    if (!mu.AwaitWithDeadline(absl::Condition(&done), deadline)) return std::nullopt;
    if (this->lease.has_value()) *lease = *std::move(this->lease);
    this->lease.reset();
    return std::move(result);
  }
  // Leaves the call to finish alone; false if it already has (then Wait).
  bool Abandon() {
    absl::MutexLock lock(&mu);
    if (done) return false;
    abandoned = true;
    return true;
  }
  // Marks `uuid` busy until the call returns.
  void MarkBusy(BusyDomains* domains, const std::string& uuid) {
    absl::MutexLock lock(&mu);
    if (!done) busy.push_back(domains->Begin(uuid, absl::InfinitePast()));
  }
  // The call's connection (still owned by the call).
  virConnectPtr conn() {
    absl::MutexLock lock(&mu);
    return lease.has_value() ? lease->get() : nullptr;
  }
  // Called by the call thread with what it read.
  void Finish(absl::StatusOr<std::vector<DomainStats>> read) {
    std::vector<BusyDomains::Call> no_longer_busy;  // released after the lock
    std::optional<ConnectionPool::Lease> release;
    absl::MutexLock lock(&mu);
    result = std::move(read);
    done = true;
    no_longer_busy.swap(busy);
    if (abandoned) release = std::move(lease);
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

absl::Duration BulkStatsReader::Budget(size_t domains) const {
  return std::max(options_.min_budget,
                  options_.budget_per_domain * static_cast<int64_t>(domains));
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
  struct Call {  // shared: a task must be copyable
    ConnectHandle conn;
    std::vector<DomainHandle> doms;
  };
  virConnectRef(lease->get());
  auto call = std::make_shared<Call>(Call{ConnectHandle(lease->get()), std::move(doms)});
  auto pending = std::make_shared<Pending>();
  {
    absl::MutexLock lock(&pending->mu);
    pending->lease = std::move(*lease);
  }
  absl::Status queued = calls_.Submit(
      [pending, reads = reads_, call, whole](bool cancelled) {
        if (cancelled) {
          pending->Finish(absl::UnavailableError("server shutting down"));
          return;
        }
        std::vector<virDomainPtr> list;
        for (const DomainHandle& d : call->doms) list.push_back(d.get());
        pending->Finish(whole ? reads->AllStats(call->conn.get(), DomainReads::kFactGroups)
                              : reads->Stats(list, DomainReads::kFactGroups));
      },
      deadline);
  if (!queued.ok()) {
    absl::MutexLock lock(&pending->mu);
    *lease = *std::move(pending->lease);
    return queued;
  }
  const absl::Time budget_ends = absl::Now() + Budget(wanted.size());
  std::optional<absl::StatusOr<std::vector<DomainStats>>> got =
      pending->Wait(std::min(budget_ends, deadline), lease);
  if (got.has_value()) {
    if (!got->ok()) return got->status();
    out.stats = **std::move(got);
    return out;
  }
  if (deadline <= budget_ends) {
    // The caller's deadline came first: the call is slow, not known stuck.
    // It keeps its connection until it returns; the caller has none now.
    if (pending->Abandon()) {
      return absl::DeadlineExceededError("libvirt did not return domain stats by the deadline");
    }
    got = pending->Wait(absl::InfiniteFuture(), lease);
    if (!got->ok()) return got->status();
    out.stats = **std::move(got);
    return out;
  }
  return AvoidStuck(pending, lease, wanted, std::move(out.busy), deadline);
}

absl::StatusOr<BulkStatsReader::Result> BulkStatsReader::AvoidStuck(
    const std::shared_ptr<Pending>& pending, ConnectionPool::Lease* lease,
    const std::vector<std::string>& uuids, absl::flat_hash_set<std::string> busy,
    absl::Time deadline) {
  // Past the budget: is a domain's monitor stuck, or is libvirt just slow?
  // Never ask on the call's connection (see the header): retire it (the call
  // keeps it) and look from another one.
  if (virConnectPtr stuck = pending->conn(); stuck != nullptr) pool_->Retire(stuck);
  absl::StatusOr<ConnectionPool::Lease> other = pool_->Acquire(deadline);
  std::vector<std::string> found;
  std::vector<std::string> others;
  if (other.ok()) {
    absl::StatusOr<std::vector<DomainHandle>> probed =
        other->handles().Resolve(other->get(), uuids, reads_.get());
    const absl::Duration occupied = std::min(absl::Milliseconds(500), Budget(uuids.size()) / 2);
    for (size_t i = 0; probed.ok() && i < probed->size(); ++i) {
      const DomainHandle& d = (*probed)[i];
      if (!d) continue;  // undefined meanwhile
      // Past the deadline, the rest count as not found (the read fails below).
      absl::StatusOr<absl::Duration> for_how_long =
          absl::Now() < deadline ? reads_->MonitorOccupiedFor(d.get()) : absl::ZeroDuration();
      if (for_how_long.ok() && *for_how_long >= occupied) {
        found.push_back(uuids[i]);
        LogWarning("domain ", DomainName(d.get()), ": its QEMU has not answered for ",
                   absl::FormatDuration(*for_how_long), "; reported stale until it does");
      } else {
        others.push_back(uuids[i]);
      }
    }
  }
  if (found.empty()) {
    // Just slow, or nowhere to look from: wait for the call as long as the
    // caller does, holding nothing idle meanwhile.
    if (other.ok()) other = absl::CancelledError("not needed");
    std::optional<absl::StatusOr<std::vector<DomainStats>>> got = pending->Wait(deadline, lease);
    if (got.has_value()) {
      if (!got->ok()) return got->status();
      return Result{**std::move(got), std::move(busy)};
    }
    // Still stuck, cause unknown: every domain it reads is busy until it
    // returns, so retries report them stale instead of stacking up calls.
    for (const std::string& uuid : uuids) pending->MarkBusy(busy_.get(), uuid);
    if (!pending->Abandon()) {
      got = pending->Wait(absl::InfiniteFuture(), lease);
      if (!got->ok()) return got->status();
      return Result{**std::move(got), std::move(busy)};
    }
    return absl::DeadlineExceededError("libvirt did not return domain stats by the deadline");
  }
  for (const std::string& uuid : found) {
    pending->MarkBusy(busy_.get(), uuid);
    busy.insert(uuid);
  }
  if (!pending->Abandon()) {  // came back meanwhile
    std::optional<absl::StatusOr<std::vector<DomainStats>>> got =
        pending->Wait(absl::InfiniteFuture(), lease);
    if (!got->ok()) return got->status();
    return Result{**std::move(got), std::move(busy)};
  }
  // The others, read on the other connection the same guarded way: a second
  // frozen guest among them is found the same way.
  *lease = *std::move(other);
  absl::StatusOr<Result> rest = Read(lease, others, /*all_domains=*/false, deadline);
  if (!rest.ok()) return rest.status();
  rest->busy.insert(busy.begin(), busy.end());
  return rest;
}

}  // namespace virtgate
