#include "server/domain_facts_cache.h"

#include "absl/container/flat_hash_set.h"
#include "server/libvirt_errors.h"
#include "server/libvirt_handles.h"

namespace virtgate {

std::optional<DomainFacts> DomainFactsCache::Lookup(const std::string& uuid,
                                                    const std::string& name,
                                                    uint32_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(uuid);
  if (it == entries_.end() || it->second.name != name || it->second.id != id ||
      absl::Now() - it->second.fetched > ttl_) {
    return std::nullopt;
  }
  return it->second;
}

std::optional<DomainFacts> DomainFactsCache::LastKnown(const std::string& uuid) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(uuid);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

void DomainFactsCache::Remember(const std::string& uuid, const DomainFacts& facts) {
  absl::MutexLock lock(&mu_);
  DomainFacts& entry = entries_[uuid];
  // Bulk stats do not say these; keep what a fetch found.
  const bool persistent = entry.persistent, autostart = entry.autostart;
  entry = facts;
  entry.persistent = persistent;
  entry.autostart = autostart;
}

absl::StatusOr<DomainFacts> DomainFactsCache::Fetch(virDomainPtr dom, const std::string& uuid) {
  DomainFacts facts;
  facts.name = DomainName(dom);
  facts.id = DomainId(dom);

  virDomainInfo info;
  if (virDomainGetInfo(dom, &info) < 0) return LastLibvirtError("virDomainGetInfo " + facts.name);
  facts.state = info.state;
  facts.vcpus = info.nrVirtCpu;
  facts.memory_kib = info.memory;
  facts.max_memory_kib = info.maxMem;
  const int persistent = virDomainIsPersistent(dom);
  if (persistent < 0) return LastLibvirtError("virDomainIsPersistent " + facts.name);
  facts.persistent = persistent == 1;
  int autostart = 0;
  if (virDomainGetAutostart(dom, &autostart) < 0) {
    return LastLibvirtError("virDomainGetAutostart " + facts.name);
  }
  facts.autostart = autostart != 0;
  facts.fetched = absl::Now();

  absl::MutexLock lock(&mu_);
  entries_[uuid] = facts;
  ++fetches_;
  return facts;
}

void DomainFactsCache::Invalidate(const std::string& uuid) {
  absl::MutexLock lock(&mu_);
  entries_.erase(uuid);
}

void DomainFactsCache::Retain(const std::vector<std::string>& uuids) {
  absl::flat_hash_set<std::string> keep(uuids.begin(), uuids.end());
  absl::MutexLock lock(&mu_);
  absl::erase_if(entries_, [&](const auto& kv) { return !keep.contains(kv.first); });
}

uint64_t DomainFactsCache::fetches() const {
  absl::MutexLock lock(&mu_);
  return fetches_;
}

size_t DomainFactsCache::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace virtgate
