#include "server/reads/libvirt_lister.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/libvirt/domain_state.h"
#include "server/reads/domain_lister.h"

namespace virtgate {
namespace {

unsigned int ListFlags(const ListQuery& q) {
  unsigned int flags = 0;
  if (q.active.has_value()) {
    flags |= *q.active ? VIR_CONNECT_LIST_DOMAINS_ACTIVE : VIR_CONNECT_LIST_DOMAINS_INACTIVE;
  }
  if (q.persistent.has_value()) {
    flags |= *q.persistent ? VIR_CONNECT_LIST_DOMAINS_PERSISTENT
                           : VIR_CONNECT_LIST_DOMAINS_TRANSIENT;
  }
  if (q.autostart.has_value()) {
    flags |= *q.autostart ? VIR_CONNECT_LIST_DOMAINS_AUTOSTART
                          : VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART;
  }
  return flags;  // states: filtered exactly after the stats are read
}

// A Domain from libvirt's bulk stats record (state, identity) and facts.
v1::Domain FromStats(const DomainStats& s, const DomainCache::Facts* facts, absl::Time read_at) {
  v1::Domain d = DomainFromStats(s);
  if (facts != nullptr) {
    DomainCache::ApplyFacts(*facts, read_at, &d);
  } else {
    d.set_stale(true);
  }
  return d;
}

}  // namespace

absl::StatusOr<v1::ListDomainsResponse> LibvirtLister::List(const ListQuery& query,
                                                           ConnectionPool::Lease* lease,
                                                           absl::Time deadline) {
  const unsigned int flags = ListFlags(query);
  absl::StatusOr<std::vector<DomainHandle>> listed = reads_->ListAll(lease->get(), flags);
  if (!listed.ok()) return listed.status();
  if (flags == 0) lease->handles().Replace(*listed);  // the page's stats call needs them
  std::vector<std::tuple<std::string, std::string>> entries;  // (name, uuid), sorted
  entries.reserve(listed->size());
  for (const DomainHandle& d : *listed) entries.emplace_back(DomainName(d.get()), DomainUuid(d.get()));
  std::sort(entries.begin(), entries.end());
  size_t next = 0;
  if (query.after.has_value()) {
    next = std::upper_bound(entries.begin(), entries.end(),
                            std::make_tuple(query.after->first, query.after->second)) -
           entries.begin();
  }
  // Persistence and autostart: the short flagged lists, unless pinned.
  absl::flat_hash_set<std::string> transient, autostart;
  if (!query.persistent.has_value()) {
    absl::StatusOr<absl::flat_hash_set<std::string>> got =
        reads_->ListUuids(lease->get(), flags | VIR_CONNECT_LIST_DOMAINS_TRANSIENT);
    if (!got.ok()) return got.status();
    transient = *std::move(got);
  }
  if (!query.autostart.has_value()) {
    absl::StatusOr<absl::flat_hash_set<std::string>> got =
        reads_->ListUuids(lease->get(), flags | VIR_CONNECT_LIST_DOMAINS_AUTOSTART);
    if (!got.ok()) return got.status();
    autostart = *std::move(got);
  }
  v1::ListDomainsResponse response;
  // Usually one pass; more only when the state filter drops domains.
  while (response.domains_size() < query.page_size && next < entries.size()) {
    const size_t end = std::min(entries.size(), next + query.page_size - response.domains_size());
    std::vector<FactsReader::Wanted> wanted;
    for (size_t i = next; i < end; ++i) wanted.push_back({std::get<1>(entries[i]), 0});
    absl::StatusOr<FactsReader::Result> read =
        facts_->Read(lease, wanted, false, FactsReader::InfoReuse::kWhileUnchanged, deadline);
    if (!read.ok()) return read.status();
    for (size_t i = 0; i < wanted.size(); ++i) {
      const FactsReader::Wanted& w = wanted[i];
      const FactsReader::DomainRead& r = read->domains[i];
      v1::Domain d;
      if (r.outcome == FactsReader::DomainRead::Outcome::kRead) {
        d = FromStats(r.stats, &r.facts, read->read_at);
      } else if (r.outcome == FactsReader::DomainRead::Outcome::kGone) {
        continue;  // undefined since it was listed
      } else if (std::optional<DomainCache::Record> known = cache_->FindByUuid(w.uuid)) {
        d = **known;  // busy: its last known record
        d.set_stale(true);
      } else {
        d.set_uuid(w.uuid);
        d.set_state(v1::DOMAIN_STATE_NOSTATE);
        d.set_stale(true);
      }
      d.set_sequence(0);  // not tied to a sequence
      if (!query.states.empty() && !query.states.contains(d.state())) continue;
      d.set_persistent(query.persistent.value_or(!transient.contains(w.uuid)));
      d.set_autostart(query.autostart.value_or(autostart.contains(w.uuid)));
      *response.add_domains() = std::move(d);
    }
    next = end;
  }
  if (next < entries.size() && next > 0) {
    // After the last domain looked at (those the filters dropped need no
    // second look).
    v1::Domain last;
    last.set_name(std::get<0>(entries[next - 1]));
    last.set_uuid(std::get<1>(entries[next - 1]));
    response.set_next_page_token(NextPageToken(query, last, /*snapshot=*/0, *tokens_));
  }
  return response;  // sequence 0, epoch empty: not tied to a sequence
}

absl::StatusOr<v1::Domain> LibvirtLister::Get(const GetQuery& query, absl::Time deadline) {
  absl::StatusOr<ConnectionPool::Lease> lease = pool_->Acquire(deadline);
  if (!lease.ok()) return lease.status();
  const std::string& uri = pool_->options().connect.uri;
  absl::StatusOr<DomainHandle> dom = query.uuid.empty()
                                         ? reads_->LookupByName(lease->get(), query.name)
                                         : reads_->LookupByUuid(lease->get(), query.uuid);
  if (!dom.ok()) return WhileAlive(dom.status(), lease->get(), uri);
  const std::string uuid = DomainUuid(dom->get());
  absl::StatusOr<bool> persistent = reads_->IsPersistent(dom->get());
  absl::StatusOr<bool> autostart = reads_->Autostart(dom->get());
  absl::StatusOr<FactsReader::Result> read =
      facts_->Read(&*lease, {{uuid, 0}}, false, FactsReader::InfoReuse::kNever, deadline);
  if (!read.ok()) return WhileAlive(read.status(), lease->get(), uri);
  v1::Domain d;
  const FactsReader::DomainRead& r = read->domains[0];
  if (r.outcome == FactsReader::DomainRead::Outcome::kRead) {
    d = FromStats(r.stats, &r.facts, read->read_at);
  } else if (r.outcome == FactsReader::DomainRead::Outcome::kGone) {
    return absl::NotFoundError(absl::StrCat("domain ", uuid, " was undefined while being read"));
  } else {
    // A call on it is stuck: what is known, at once.
    std::optional<DomainCache::Record> known = cache_->FindByUuid(uuid);
    if (known.has_value()) d = **known;
    d.set_uuid(uuid);
    d.set_name(DomainName(dom->get()));
    d.set_stale(true);
  }
  d.set_sequence(0);
  if (persistent.ok()) d.set_persistent(*persistent);
  if (autostart.ok()) d.set_autostart(*autostart);
  if (!persistent.ok() || !autostart.ok()) d.set_stale(true);
  return d;
}

}  // namespace virtgate
