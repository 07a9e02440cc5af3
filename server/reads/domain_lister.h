// DomainLister: ListDomains pages and GetDomain answers.
//
// Identity, state and membership come from the DomainCache as of one event
// sequence, which the page names, so list-then-watch neither loses nor
// repeats a change. Then:
//   - CACHED: nothing else; no libvirt call (facts_time says how old the
//     facts are). Runs on any thread.
//   - FRESH: the page's facts are read from libvirt now, with one bulk-stats
//     call for the page's domains (FactsReader): libvirt work proportional
//     to the page, not to every domain. Autostart, which libvirt can only
//     list for all domains at once, is read once per paged listing (on its
//     first page). The states libvirt reported go to the cache's drift
//     check. Blocks on libvirt: worker threads only.
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
#include "server/state/domain_cache.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class DomainLister {
 public:
  DomainLister(std::shared_ptr<DomainCache> cache, std::shared_ptr<ConnectionPool> pool,
               std::shared_ptr<DomainReads> reads, std::shared_ptr<FactsReader> facts,
               std::shared_ptr<LibvirtLister> libvirt)
      : cache_(std::move(cache)),
        pool_(std::move(pool)),
        reads_(std::move(reads)),
        facts_(std::move(facts)),
        libvirt_(std::move(libvirt)) {}

  absl::StatusOr<v1::ListDomainsResponse> ListCached(const ListQuery& query) const;
  absl::StatusOr<v1::Domain> GetCached(const GetQuery& query) const;

  absl::StatusOr<v1::ListDomainsResponse> ListFresh(const ListQuery& query, absl::Time deadline);
  absl::StatusOr<v1::Domain> GetFresh(const GetQuery& query, absl::Time deadline);

 private:
  // The cache's page for `query`, autostart read first where needed.
  absl::StatusOr<DomainCache::View> FreshPage(const ListQuery& query,
                                              ConnectionPool::Lease* lease);
  // Reports what libvirt said of `wanted` to the cache (facts, drift).
  void Record(const std::vector<FactsReader::Wanted>& wanted,
              const FactsReader::Result& read);

  const std::shared_ptr<DomainCache> cache_;
  const std::shared_ptr<ConnectionPool> pool_;
  const std::shared_ptr<DomainReads> reads_;
  const std::shared_ptr<FactsReader> facts_;
  const std::shared_ptr<LibvirtLister> libvirt_;
};

// A failure on a connection that died under the call (libvirtd killed or
// restarted) is UNAVAILABLE, whatever libvirt called the error: retrying is
// right, and the client must not mistake it for a bad request.
absl::Status WhileAlive(absl::Status status, virConnectPtr conn, const std::string& uri);

}  // namespace virtgate
