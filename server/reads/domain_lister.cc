#include "server/reads/domain_lister.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/libvirt/domain_state.h"

namespace virtgate {
namespace {

absl::Status NeverReached() {
  return absl::UnavailableError(
      "hypervisor unavailable: libvirt has not been reached yet, so nothing is known to "
      "answer from; retry, or read FRESH");
}

}  // namespace

absl::Status WhileAlive(absl::Status status, virConnectPtr conn, const std::string& uri) {
  if (status.ok() || status.code() == absl::StatusCode::kUnavailable ||
      virConnectIsAlive(conn) == 1) {
    return status;
  }
  return absl::UnavailableError(absl::StrCat("hypervisor unavailable: ", uri,
                                             ": connection lost during the call (",
                                             status.message(), ")"));
}

absl::StatusOr<v1::ListDomainsResponse> DomainLister::ListCached(const ListQuery& query) const {
  const DomainCache::View view = cache_->Read(
      {query.after, static_cast<size_t>(query.page_size),
       [&query](const v1::Domain& d) { return query.Matches(d); }});
  if (!view.seeded) return NeverReached();
  v1::ListDomainsResponse response;
  for (const DomainCache::Record& record : view.domains) {
    v1::Domain* d = response.add_domains();
    *d = *record;
    // Events not flowing: the state may be old. Facts never read: unknown.
    if (!view.current || !d->has_facts_time()) d->set_stale(true);
  }
  response.set_sequence(view.sequence);
  response.set_epoch(cache_->epoch());
  if (view.more) response.set_next_page_token(NextPageToken(query, *view.domains.back()));
  return response;
}

absl::StatusOr<v1::Domain> DomainLister::GetCached(const GetQuery& query) const {
  DomainCache::View at;
  std::optional<DomainCache::Record> record = query.uuid.empty()
                                                  ? cache_->FindByName(query.name, &at)
                                                  : cache_->FindByUuid(query.uuid, &at);
  if (!at.seeded) return NeverReached();
  if (!record.has_value()) {
    return absl::NotFoundError(absl::StrCat(
        "domain ", query.uuid.empty() ? absl::StrCat("\"", query.name, "\"") : query.uuid,
        " not found"));
  }
  v1::Domain d = **record;
  if (!at.current || !d.has_facts_time()) d.set_stale(true);
  return d;
}

absl::StatusOr<DomainCache::View> DomainLister::FreshPage(const ListQuery& query,
                                                          ConnectionPool::Lease* lease) {
  // Autostart has no event and no stats group: one flagged listing of all
  // domains, once per paged listing (the first page's; later pages use any
  // reading taken since the listing began).
  if (query.listing_started > cache_->autostart_read_at()) {
    const absl::Time started = absl::Now();
    absl::StatusOr<absl::flat_hash_set<std::string>> autostart =
        reads_->ListUuids(lease->get(), VIR_CONNECT_LIST_DOMAINS_AUTOSTART);
    if (!autostart.ok()) return autostart.status();
    cache_->UpdateAutostart(*autostart, started);
  }
  return cache_->Read({query.after, static_cast<size_t>(query.page_size),
                       [&query](const v1::Domain& d) { return query.Matches(d); }});
}

void DomainLister::Record(const std::vector<FactsReader::Wanted>& wanted,
                          const FactsReader::Result& read) {
  std::vector<DomainCache::Facts> facts;
  facts.reserve(read.facts.size());
  std::vector<DomainCache::Observed> observed;
  observed.reserve(wanted.size());
  for (const FactsReader::Wanted& w : wanted) {
    if (auto it = read.facts.find(w.uuid); it != read.facts.end()) facts.push_back(it->second);
    auto stats = read.stats.find(w.uuid);
    if (stats != read.stats.end() && stats->second.state.has_value()) {
      observed.push_back(
          {w.uuid, true, ToProtoState(*stats->second.state), stats->second.id});
    } else if (stats == read.stats.end() && !read.unreadable.contains(w.uuid)) {
      observed.push_back({w.uuid, /*exists=*/false});
    }
  }
  cache_->UpdateFacts(facts, read.read_at);
  cache_->NoteObserved(observed);
}

absl::StatusOr<v1::ListDomainsResponse> DomainLister::ListFresh(const ListQuery& query,
                                                               absl::Time deadline) {
  absl::StatusOr<ConnectionPool::Lease> lease = pool_->Acquire(deadline);
  if (!lease.ok()) return lease.status();
  const std::string& uri = pool_->options().connect.uri;
  absl::StatusOr<DomainCache::View> view = FreshPage(query, &*lease);
  if (!view.ok()) return WhileAlive(view.status(), lease->get(), uri);
  if (!view->current) {
    absl::StatusOr<v1::ListDomainsResponse> direct = libvirt_->List(query, &*lease, deadline);
    if (!direct.ok()) return WhileAlive(direct.status(), lease->get(), uri);
    return direct;
  }
  std::vector<FactsReader::Wanted> wanted;
  wanted.reserve(view->domains.size());
  for (const DomainCache::Record& r : view->domains) wanted.push_back({r->uuid(), r->sequence()});
  // The page is every domain there is: one call reads them all.
  const bool all = !query.after && !view->more && view->domains.size() == view->total;
  absl::StatusOr<FactsReader::Result> read =
      facts_->Read(&*lease, wanted, all, FactsReader::InfoReuse::kWhileUnchanged, deadline);
  if (!read.ok()) return WhileAlive(read.status(), lease->get(), uri);
  Record(wanted, *read);
  v1::ListDomainsResponse response;
  for (const DomainCache::Record& record : view->domains) {
    v1::Domain* d = response.add_domains();
    *d = *record;
    if (auto it = read->facts.find(d->uuid()); it != read->facts.end()) {
      DomainCache::ApplyFacts(it->second, read->read_at, d);
    } else {
      d->set_stale(true);  // busy, unreadable, or undefined since `sequence`
    }
  }
  response.set_sequence(view->sequence);
  response.set_epoch(cache_->epoch());
  if (view->more) response.set_next_page_token(NextPageToken(query, *view->domains.back()));
  return response;
}

absl::StatusOr<v1::Domain> DomainLister::GetFresh(const GetQuery& query, absl::Time deadline) {
  DomainCache::View at;
  std::optional<DomainCache::Record> record = query.uuid.empty()
                                                  ? cache_->FindByName(query.name, &at)
                                                  : cache_->FindByUuid(query.uuid, &at);
  // Not known to the cache (or the cache is not current): ask libvirt, so a
  // domain defined a moment ago is found before its event arrives.
  if (!at.current || !record.has_value()) return libvirt_->Get(query, deadline);
  absl::StatusOr<ConnectionPool::Lease> lease = pool_->Acquire(deadline);
  if (!lease.ok()) return lease.status();
  const std::string& uri = pool_->options().connect.uri;
  const std::vector<FactsReader::Wanted> wanted = {{(*record)->uuid(), (*record)->sequence()}};
  absl::StatusOr<FactsReader::Result> read =
      facts_->Read(&*lease, wanted, false, FactsReader::InfoReuse::kNever, deadline);
  if (!read.ok()) return WhileAlive(read.status(), lease->get(), uri);
  Record(wanted, *read);
  v1::Domain d = **record;
  auto it = read->facts.find(d.uuid());
  if (it == read->facts.end()) {
    if (!read->unreadable.contains(d.uuid())) {
      return absl::NotFoundError(absl::StrCat("domain ", d.uuid(), " was undefined"));
    }
    d.set_stale(true);  // a call on it is stuck: what is known, at once
    return d;
  }
  DomainCache::ApplyFacts(it->second, read->read_at, &d);
  // One domain: its autostart flag directly (one round trip).
  absl::StatusOr<std::vector<DomainHandle>> dom =
      lease->handles().Resolve(lease->get(), {d.uuid()}, reads_.get());
  absl::StatusOr<bool> autostart = absl::NotFoundError("undefined");
  if (dom.ok() && (*dom)[0]) autostart = reads_->Autostart((*dom)[0].get());
  if (autostart.ok()) {
    d.set_autostart(*autostart);
  } else {
    d.set_stale(true);
  }
  return d;
}

}  // namespace virtgate
