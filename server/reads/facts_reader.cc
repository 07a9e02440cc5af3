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
  result.unreadable = std::move(read->busy);
  for (DomainStats& s : read->stats) result.stats.emplace(s.uuid, std::move(s));
  std::vector<const Wanted*> need_info;
  for (const Wanted& w : wanted) {
    auto it = result.stats.find(w.uuid);
    if (it == result.stats.end()) continue;  // busy, or gone
    result.facts.emplace(w.uuid, FromStats(it->second));
    if (!it->second.has_facts()) need_info.push_back(&w);
  }
  if (!need_info.empty()) ReadInfo(lease, need_info, reuse, deadline, &result);
  return result;
}

void FactsReader::ReadInfo(ConnectionPool::Lease* lease, const std::vector<const Wanted*>& need,
                           InfoReuse reuse, absl::Time deadline, Result* result) {
  std::vector<std::string> fetch;
  absl::flat_hash_map<std::string, uint64_t> sequence_of;
  {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    if (info_.size() > 2 * need.size() + 4096) info_.clear();  // bounded under churn
    for (const Wanted* w : need) {
      sequence_of[w->uuid] = w->sequence;
      auto it = info_.find(w->uuid);
      const uint32_t id = result->stats.at(w->uuid).id;
      const bool reusable = reuse == InfoReuse::kWhileUnchanged && it != info_.end() &&
                            it->second.sequence == w->sequence && it->second.id == id &&
                            now - it->second.fetched < kInfoTtl;
      if (!reusable) {
        fetch.push_back(w->uuid);
        continue;
      }
      DomainCache::Facts& f = result->facts.at(w->uuid);
      f.vcpus = it->second.info.vcpus;
      f.memory_kib = it->second.info.memory_kib;
      f.max_memory_kib = it->second.info.max_memory_kib;
    }
  }
  if (fetch.empty()) return;
  absl::StatusOr<std::vector<DomainHandle>> doms =
      lease->handles().Resolve(lease->get(), fetch, reads_.get());
  std::vector<std::pair<std::string, Info>> fetched;
  for (size_t i = 0; i < fetch.size(); ++i) {
    const std::string& uuid = fetch[i];
    absl::StatusOr<DomainInfo> info = absl::UnavailableError("no handle");
    if (!doms.ok()) {
      info = doms.status();
    } else if (!(*doms)[i]) {
      info = absl::NotFoundError("undefined");
    } else if (stats_->busy().IsBusy(uuid)) {
      info = absl::UnavailableError("busy");  // a call on it is stuck: not another
    } else {
      BusyDomains::Call call = stats_->shared_busy()->Begin(uuid, deadline);
      info = reads_->Info((*doms)[i].get());
    }
    if (!info.ok()) {
      // Cannot read it now: report the last known facts, marked stale,
      // rather than leave it out (a missing domain looks deleted).
      LogDebug("domain ", uuid, " reported stale: ", info.status().message());
      result->facts.erase(uuid);
      if (info.status().code() != absl::StatusCode::kNotFound) result->unreadable.insert(uuid);
      continue;
    }
    DomainCache::Facts& f = result->facts.at(uuid);
    f.vcpus = info->vcpus;
    f.memory_kib = info->memory_kib;
    f.max_memory_kib = info->max_memory_kib;
    fetched.emplace_back(uuid,
                         Info{sequence_of[uuid], result->stats.at(uuid).id, *info, absl::Now()});
  }
  absl::MutexLock lock(&mu_);
  for (auto& [uuid, info] : fetched) info_[uuid] = std::move(info);
}

}  // namespace virtgate
