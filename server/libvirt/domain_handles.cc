#include "server/libvirt/domain_handles.h"

#include <utility>

namespace virtgate {
namespace {

DomainHandle NewReference(virDomainPtr dom) {
  virDomainRef(dom);
  return DomainHandle(dom);
}

}  // namespace

absl::StatusOr<std::vector<DomainHandle>> DomainHandles::Resolve(
    virConnectPtr conn, const std::vector<std::string>& uuids, DomainReads* reads) {
  std::vector<DomainHandle> out(uuids.size());
  std::vector<size_t> missing;
  bool list_all;
  {
    absl::MutexLock lock(&mu_);
    // Churn (domains defined, looked up, undefined) must not grow it forever.
    if (by_uuid_.size() > 2 * listed_ + 1024) by_uuid_.clear();
    for (size_t i = 0; i < uuids.size(); ++i) {
      auto it = by_uuid_.find(uuids[i]);
      if (it == by_uuid_.end()) {
        missing.push_back(i);
      } else {
        out[i] = NewReference(it->second.get());
      }
    }
    // A lookup is a round trip (tens of microseconds); a listing costs a few
    // microseconds per domain, all of them.
    list_all = missing.size() > 32 && missing.size() * 16 > by_uuid_.size();
  }
  if (missing.empty()) return out;
  if (list_all) {
    absl::StatusOr<std::vector<DomainHandle>> listed = reads->ListAll(conn, 0);
    if (!listed.ok()) return listed.status();
    absl::flat_hash_map<std::string, DomainHandle> fresh;
    fresh.reserve(listed->size());
    for (DomainHandle& d : *listed) fresh.emplace(DomainUuid(d.get()), std::move(d));
    for (size_t i : missing) {
      auto it = fresh.find(uuids[i]);
      if (it != fresh.end()) out[i] = NewReference(it->second.get());
    }
    absl::MutexLock lock(&mu_);
    listed_ = fresh.size();
    by_uuid_ = std::move(fresh);
    return out;
  }
  std::vector<std::pair<std::string, DomainHandle>> found;
  for (size_t i : missing) {
    absl::StatusOr<DomainHandle> dom = reads->LookupByUuid(conn, uuids[i]);
    if (!dom.ok()) {
      if (dom.status().code() == absl::StatusCode::kNotFound) continue;  // undefined
      return dom.status();
    }
    out[i] = NewReference(dom->get());
    found.emplace_back(uuids[i], *std::move(dom));
  }
  absl::MutexLock lock(&mu_);
  for (auto& [uuid, dom] : found) by_uuid_[uuid] = std::move(dom);
  return out;
}

void DomainHandles::Replace(const std::vector<DomainHandle>& all) {
  absl::flat_hash_map<std::string, DomainHandle> fresh;
  fresh.reserve(all.size());
  for (const DomainHandle& d : all) fresh.emplace(DomainUuid(d.get()), NewReference(d.get()));
  absl::MutexLock lock(&mu_);
  listed_ = fresh.size();
  by_uuid_ = std::move(fresh);
}

size_t DomainHandles::size() const {
  absl::MutexLock lock(&mu_);
  return by_uuid_.size();
}

}  // namespace virtgate
