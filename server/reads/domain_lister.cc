#include "server/reads/domain_lister.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/base/quote.h"
#include "server/libvirt/domain_state.h"

namespace virtgate {
namespace {

// Whether `d`'s facts were read from libvirt at or after `t`.
bool ReadSince(const v1::Domain& d, absl::Time t) {
  return d.has_facts_time() &&
         absl::FromUnixSeconds(d.facts_time().seconds()) + absl::Nanoseconds(d.facts_time().nanos()) >= t;
}

absl::Status NeverReached() {
  return absl::UnavailableError(
      "hypervisor unavailable: libvirt has not been reached yet, so nothing is known to "
      "answer from; retry, or read FRESH");
}

}  // namespace

absl::Status WhileAlive(absl::Status status, virConnectPtr conn, const std::string& uri) {
  // No connection: a call that timed out kept it (see BulkStatsReader).
  if (status.ok() || status.code() == absl::StatusCode::kUnavailable || conn == nullptr ||
      virConnectIsAlive(conn) == 1) {
    return status;
  }
  return absl::UnavailableError(absl::StrCat("hypervisor unavailable: ", uri,
                                             ": connection lost during the call (",
                                             status.message(), ")"));
}

DomainLister::Page DomainLister::PageOf(const ListQuery& query) const {
  Page page;
  if (query.snapshot != 0) page.view = snapshots_->Find(query.snapshot);
  if (page.view != nullptr) {
    // A later page of a listing whose snapshot is still kept.
    page.snapshot = query.snapshot;
    const std::vector<DomainCache::Record>& all = page.view->domains;
    page.begin = std::upper_bound(all.begin(), all.end(), *query.after,
                                  [](const auto& after, const DomainCache::Record& r) {
                                    return after < std::make_pair(r->name(), r->uuid());
                                  }) -
                 all.begin();
  } else {
    // A first page (or one whose snapshot is gone): the cache now, from the
    // cursor on, kept as the snapshot of the pages that follow.
    page.view = std::make_shared<const DomainCache::View>(cache_->Read(
        {query.after, SIZE_MAX, [&query](const v1::Domain& d) { return query.Matches(d); }}));
  }
  page.end = std::min(page.view->domains.size(), page.begin + query.page_size);
  if (page.more() && page.snapshot == 0) page.snapshot = snapshots_->Keep(page.view);
  return page;
}

v1::ListDomainsResponse DomainLister::Respond(const ListQuery& query, const Page& page) const {
  v1::ListDomainsResponse response;
  response.set_sequence(page.view->sequence);
  response.set_epoch(cache_->epoch());
  if (page.more()) {
    response.set_next_page_token(
        NextPageToken(query, *page.view->domains[page.end - 1], page.snapshot, *tokens_));
  }
  return response;
}

absl::StatusOr<v1::ListDomainsResponse> DomainLister::ListCached(const ListQuery& query) const {
  const Page page = PageOf(query);
  if (!page.view->seeded) return NeverReached();
  v1::ListDomainsResponse response = Respond(query, page);
  for (size_t i = page.begin; i < page.end; ++i) {
    v1::Domain* d = response.add_domains();
    *d = *page.view->domains[i];
    // Events not flowing: the state may be old. Facts never read: unknown.
    if (!page.view->current || !d->has_facts_time()) d->set_stale(true);
  }
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
        "domain ", query.uuid.empty() ? Quote(query.name) : query.uuid,
        " not found"));
  }
  v1::Domain d = **record;
  if (!at.current || !d.has_facts_time()) d.set_stale(true);
  return d;
}

absl::Status DomainLister::ReadAutostart(ConnectionPool::Lease* lease) {
  // Autostart has no event and no stats group: one flagged listing of all
  // domains, once per paged listing (the first page's; later pages use any
  // reading taken since the listing began).
  const absl::Time started = absl::Now();
  absl::StatusOr<absl::flat_hash_set<std::string>> autostart =
      reads_->ListUuids(lease->get(), VIR_CONNECT_LIST_DOMAINS_AUTOSTART);
  if (!autostart.ok()) return autostart.status();
  cache_->UpdateAutostart(*autostart, started);
  return absl::OkStatus();
}

std::vector<FactsReader::Wanted> DomainLister::Everything() const {
  std::vector<FactsReader::Wanted> all;
  const DomainCache::View view = cache_->Read({});
  all.reserve(view.domains.size());
  for (const DomainCache::Record& r : view.domains) all.push_back({r->uuid(), r->sequence()});
  return all;
}

void DomainLister::Record(const std::vector<FactsReader::Wanted>& wanted,
                          const FactsReader::Result& read) {
  std::vector<DomainCache::Facts> facts;
  facts.reserve(wanted.size());
  std::vector<DomainCache::Observed> observed;
  observed.reserve(wanted.size());
  for (size_t i = 0; i < wanted.size(); ++i) {
    const FactsReader::DomainRead& r = read.domains[i];
    if (r.outcome == FactsReader::DomainRead::Outcome::kGone) {
      observed.push_back({wanted[i].uuid, wanted[i].sequence, /*exists=*/false});
      continue;
    }
    if (r.outcome != FactsReader::DomainRead::Outcome::kRead) continue;
    facts.push_back(r.facts);
    facts.back().sequence = wanted[i].sequence;
    if (r.stats.state.has_value()) {
      observed.push_back(
          {wanted[i].uuid, wanted[i].sequence, true, ToProtoState(*r.stats.state), r.stats.id});
    }
  }
  cache_->UpdateFacts(facts, read.read_at);
  cache_->NoteObserved(observed);
}

absl::StatusOr<v1::ListDomainsResponse> DomainLister::ListFresh(const ListQuery& query,
                                                               absl::Time deadline) {
  const std::string& uri = pool_->options().connect.uri;
  // A connection only if libvirt is to be asked (a later page whose facts
  // were all read since the listing began needs none).
  std::optional<ConnectionPool::Lease> lease;
  auto leased = [&]() -> absl::Status {
    if (lease.has_value()) return absl::OkStatus();
    absl::StatusOr<ConnectionPool::Lease> got = pool_->Acquire(deadline);
    if (!got.ok()) return got.status();
    lease.emplace(*std::move(got));
    return absl::OkStatus();
  };
  auto direct = [&]() -> absl::StatusOr<v1::ListDomainsResponse> {
    if (absl::Status s = leased(); !s.ok()) return s;
    absl::StatusOr<v1::ListDomainsResponse> listed = libvirt_->List(query, &*lease, deadline);
    if (!listed.ok()) return WhileAlive(listed.status(), lease->get(), uri);
    return listed;
  };
  if (!cache_->current()) return direct();
  if (query.listing_started > cache_->autostart_read_at()) {
    if (absl::Status s = leased(); !s.ok()) return s;
    if (absl::Status s = ReadAutostart(&*lease); !s.ok()) {
      return WhileAlive(s, lease->get(), uri);
    }
  }
  const Page page = PageOf(query);
  if (!page.view->current) return direct();
  // Facts read since the listing began (by an earlier page of it, or by
  // another reader) are fresh enough; the rest are read now.
  const DomainCache::Record* first = page.view->domains.data() + page.begin;
  const std::vector<DomainCache::Record> current =
      cache_->Current(first, page.view->domains.data() + page.end);
  std::vector<FactsReader::Wanted> wanted;
  for (const DomainCache::Record& r : current) {
    if (r != nullptr && !ReadSince(*r, query.listing_started)) {
      wanted.push_back({r->uuid(), r->sequence()});
    }
  }
  // Many of them: one call reads every domain (GetAllDomainStats costs less
  // per domain than naming them), and the listing's later pages then need
  // no libvirt call at all.
  const bool all = wanted.size() * 4 >= page.view->total;
  if (all) wanted = Everything();
  absl::StatusOr<FactsReader::Result> read = FactsReader::Result{};
  if (!wanted.empty()) {
    if (absl::Status s = leased(); !s.ok()) return s;
    read = facts_->Read(&*lease, wanted, all, FactsReader::InfoReuse::kWhileUnchanged, deadline);
    if (!read.ok()) return WhileAlive(read.status(), lease->get(), uri);
  }
  Record(wanted, *read);
  absl::flat_hash_map<absl::string_view, const FactsReader::DomainRead*> now;
  for (size_t i = 0; i < wanted.size(); ++i) now.emplace(wanted[i].uuid, &read->domains[i]);
  v1::ListDomainsResponse response = Respond(query, page);
  for (size_t i = 0; i < current.size(); ++i) {
    v1::Domain* d = response.add_domains();
    *d = *first[i];  // identity and state as of the listing's sequence
    auto it = now.find(d->uuid());
    if (it != now.end() && it->second->outcome == FactsReader::DomainRead::Outcome::kRead) {
      DomainCache::ApplyFacts(it->second->facts, read->read_at, d);
    } else if (it == now.end() && current[i] != nullptr) {
      DomainCache::CopyFacts(*current[i], d);  // read since the listing began
    } else {
      d->set_stale(true);  // busy, unreadable, or undefined since `sequence`
    }
  }
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
  const FactsReader::DomainRead& r = read->domains[0];
  if (r.outcome == FactsReader::DomainRead::Outcome::kGone) {
    return absl::NotFoundError(absl::StrCat("domain ", d.uuid(), " was undefined"));
  }
  if (r.outcome == FactsReader::DomainRead::Outcome::kUnreadable) {
    d.set_stale(true);  // a call on it is stuck: what is known, at once
    return d;
  }
  DomainCache::ApplyFacts(r.facts, read->read_at, &d);
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
