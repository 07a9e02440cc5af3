// DomainLister: ListDomains pages and GetDomain answers.
//
// Identity, state and membership come from the DomainCache as of one event
// sequence, which the page names, so list-then-watch neither loses nor
// repeats a change. Every page of a paged listing comes from the snapshot
// its first page took (ListingSnapshots), so all pages name one sequence.
// Then:
//   - CACHED: nothing else; no libvirt call (facts_time says how old the
//     facts are). Runs on any thread.
//   - FRESH: the facts are read from libvirt since the listing began (its
//     first page's arrival). A page reads those of its domains not read
//     since then with one bulk-stats call (FactsReader): naming them when
//     few, or reading every domain at once (cheaper per domain) when they
//     are a quarter of all or more, in which case the listing's later pages
//     make no libvirt call. Autostart, which libvirt can only list for all
//     domains at once, is read the same way, once per listing. The states
//     libvirt reported go to the cache's drift check. Blocks on libvirt:
//     worker threads only.
// While the cache is not current (the event connection is down), FRESH
// reads come from libvirt alone (LibvirtLister) and are not tied to a
// sequence; CACHED ones mark every domain stale.
//
// Thread-safe.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/domain_reads.h"
#include "server/reads/domain_query.h"
#include "server/reads/facts_reader.h"
#include "server/reads/libvirt_lister.h"
#include "server/reads/listing_snapshots.h"
#include "server/reads/page_token_key.h"
#include "server/state/domain_cache.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class DomainLister {
 public:
  // `tokens` signs the next page's token.
  DomainLister(std::shared_ptr<DomainCache> cache, std::shared_ptr<ListingSnapshots> snapshots,
               std::shared_ptr<ConnectionPool> pool, std::shared_ptr<DomainReads> reads,
               std::shared_ptr<FactsReader> facts, std::shared_ptr<LibvirtLister> libvirt,
               std::shared_ptr<const PageTokenKey> tokens)
      : cache_(std::move(cache)),
        snapshots_(std::move(snapshots)),
        pool_(std::move(pool)),
        reads_(std::move(reads)),
        facts_(std::move(facts)),
        libvirt_(std::move(libvirt)),
        tokens_(std::move(tokens)) {}

  absl::StatusOr<v1::ListDomainsResponse> ListCached(const ListQuery& query) const;
  absl::StatusOr<v1::Domain> GetCached(const GetQuery& query) const;

  absl::StatusOr<v1::ListDomainsResponse> ListFresh(const ListQuery& query, absl::Time deadline);
  absl::StatusOr<v1::Domain> GetFresh(const GetQuery& query, absl::Time deadline);

 private:
  // One page of a listing: the listing's snapshot, and where the page is in it.
  struct Page {
    ListingSnapshots::View view;  // the listing, from where it started
    size_t begin = 0;
    size_t end = 0;          // this page: view->domains[begin, end)
    uint64_t snapshot = 0;   // kept for the pages that follow (0: none follow)
    bool more() const { return end < view->domains.size(); }
  };
  Page PageOf(const ListQuery& query) const;
  // A response for `page` with its sequence, epoch and next page token.
  v1::ListDomainsResponse Respond(const ListQuery& query, const Page& page) const;
  // Reads every domain's autostart flag into the cache.
  absl::Status ReadAutostart(ConnectionPool::Lease* lease);
  // Every domain in the cache, to read all of them.
  std::vector<FactsReader::Wanted> Everything() const;
  // Reports what libvirt said of `wanted` to the cache (facts, drift).
  void Record(const std::vector<FactsReader::Wanted>& wanted,
              const FactsReader::Result& read);

  const std::shared_ptr<DomainCache> cache_;
  const std::shared_ptr<ListingSnapshots> snapshots_;
  const std::shared_ptr<ConnectionPool> pool_;
  const std::shared_ptr<DomainReads> reads_;
  const std::shared_ptr<FactsReader> facts_;
  const std::shared_ptr<LibvirtLister> libvirt_;
  const std::shared_ptr<const PageTokenKey> tokens_;
};

// A failure on a connection that died under the call (libvirtd killed or
// restarted) is UNAVAILABLE, whatever libvirt called the error: retrying is
// right, and the client must not mistake it for a bad request.
absl::Status WhileAlive(absl::Status status, virConnectPtr conn, const std::string& uri);

}  // namespace virtgate
