#include "server/reads/facts_reader.h"

#include <utility>

#include "server/base/log.h"
#include "server/libvirt/domain_state.h"

namespace virtgate {
namespace {

DomainCache::Facts FromStats(const DomainStats& s) {
  DomainCache::Facts f;
  f.uuid = s.uuid;
  if (s.vcpus) f.vcpus = *s.vcpus;
  if (s.balloon_current_kib) f.memory_kib = *s.balloon_current_kib;
  if (s.balloon_maximum_kib) f.max_memory_kib = *s.balloon_maximum_kib;
  // Only a running domain has used CPU time of its own: for an inactive
  // one, QEMU's driver reports libvirtd's own CPU time.
  const bool active = s.state.has_value() && IsActiveState(ToProtoState(*s.state)) && s.id != 0;
  if (s.cpu_time_ns && active) f.cpu_time_ns = *s.cpu_time_ns;
  if (s.state.has_value()) f.seen = StateAndReason{*s.state, s.reason};
  return f;
}

}  // namespace

absl::StatusOr<FactsReader::Result> FactsReader::Read(ConnectionPool::Lease* lease,
                                                      const std::vector<Wanted>& wanted,
                                                      bool all_domains, InfoReuse reuse,
                                                      absl::Time deadline) {
  Result result;
  result.read_at = absl::Now();
  std::vector<std::string> uuids;
  uuids.reserve(wanted.size());
  for (const Wanted& w : wanted) uuids.push_back(w.uuid);
  absl::StatusOr<BulkStatsReader::Result> read = stats_->Read(lease, uuids, all_domains, deadline);
  if (!read.ok()) return read.status();
  absl::flat_hash_map<absl::string_view, size_t> at;  // uuid -> its record in read->stats
  at.reserve(read->stats.size());
  for (size_t i = 0; i < read->stats.size(); ++i) at.emplace(read->stats[i].uuid, i);
  result.domains.resize(wanted.size());
  std::vector<size_t> need;
  for (size_t i = 0; i < wanted.size(); ++i) {
    DomainRead& r = result.domains[i];
    auto it = at.find(wanted[i].uuid);
    if (it == at.end()) {
      if (read->busy.contains(wanted[i].uuid)) r.outcome = DomainRead::Outcome::kUnreadable;
      continue;
    }
    r.outcome = DomainRead::Outcome::kRead;
    r.stats = std::move(read->stats[it->second]);
    r.facts = FromStats(r.stats);
    if (!r.stats.has_facts()) need.push_back(i);
  }
  if (!need.empty()) ReadInfo(lease, wanted, need, reuse, deadline, &result);
  return result;
}

void FactsReader::ReadInfo(ConnectionPool::Lease* lease, const std::vector<Wanted>& wanted,
                           const std::vector<size_t>& need, InfoReuse reuse,
                           absl::Time deadline, Result* result) {
  std::vector<size_t> fetch;
  {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    if (info_.size() > prune_at_) {
      // Bounded under churn: what was read over 5 minutes ago is due anyway.
      absl::erase_if(info_, [&](const auto& kv) { return now - kv.second.fetched >= kInfoTtl; });
      prune_at_ = 2 * info_.size() + 1024;
    }
    for (size_t i : need) {
      DomainRead& r = result->domains[i];
      auto it = info_.find(wanted[i].uuid);
      const bool reusable = reuse == InfoReuse::kWhileUnchanged && it != info_.end() &&
                            it->second.sequence == wanted[i].sequence &&
                            it->second.id == r.stats.id && now - it->second.fetched < kInfoTtl;
      if (!reusable) {
        fetch.push_back(i);
        continue;
      }
      r.facts.vcpus = it->second.info.vcpus;
      r.facts.memory_kib = it->second.info.memory_kib;
      r.facts.max_memory_kib = it->second.info.max_memory_kib;
    }
  }
  if (fetch.empty()) return;
  std::vector<std::string> uuids;
  for (size_t i : fetch) uuids.push_back(wanted[i].uuid);
  absl::StatusOr<std::vector<DomainHandle>> doms =
      lease->handles().Resolve(lease->get(), uuids, reads_.get());
  std::vector<std::pair<std::string, Info>> fetched;
  for (size_t k = 0; k < fetch.size(); ++k) {
    DomainRead& r = result->domains[fetch[k]];
    const std::string& uuid = uuids[k];
    absl::StatusOr<DomainInfo> info = absl::UnavailableError("no handle");
    if (!doms.ok()) {
      info = doms.status();
    } else if (!(*doms)[k]) {
      info = absl::NotFoundError("undefined");
    } else if (stats_->busy().IsBusy(uuid)) {
      info = absl::UnavailableError("busy");  // a call on it is stuck: not another
    } else {
      BusyDomains::Call call = stats_->shared_busy()->Begin(uuid, deadline);
      info = reads_->Info((*doms)[k].get());
    }
    if (!info.ok()) {
      // Cannot read it now: report the last known facts, marked stale,
      // rather than leave it out (a missing domain looks deleted).
      LogDebug("domain ", uuid, " reported stale: ", info.status().message());
      r.outcome = info.status().code() == absl::StatusCode::kNotFound
                      ? DomainRead::Outcome::kGone
                      : DomainRead::Outcome::kUnreadable;
      continue;
    }
    r.facts.vcpus = info->vcpus;
    r.facts.memory_kib = info->memory_kib;
    r.facts.max_memory_kib = info->max_memory_kib;
    fetched.emplace_back(uuid, Info{wanted[fetch[k]].sequence, r.stats.id, *info, absl::Now()});
  }
  absl::MutexLock lock(&mu_);
  for (auto& [uuid, info] : fetched) info_[uuid] = std::move(info);
}

}  // namespace virtgate
