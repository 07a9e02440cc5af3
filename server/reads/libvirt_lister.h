// LibvirtLister: FRESH reads that cannot rely on the domain cache, because
// its event connection is down (or the cache does not know the domain yet):
// membership and state come from libvirt too, and the answer is not tied to
// an event sequence (ListDomainsResponse.epoch is empty).
//
// A page costs one full listing (virConnectListAllDomains) to find the
// page's domains in order, one bulk-stats call for them, and the two short
// flagged lists for persistence and autostart (skipped when a filter pins
// the value). A domain that cannot be read now is reported from its last
// known record (the cache's), marked stale, never left out.
//
// Thread-safe. Blocks on libvirt: worker threads only.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/domain_reads.h"
#include "server/reads/domain_query.h"
#include "server/reads/facts_reader.h"
#include "server/reads/page_token_key.h"
#include "server/state/domain_cache.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class LibvirtLister {
 public:
  // `tokens` signs the next page's token.
  LibvirtLister(std::shared_ptr<DomainCache> cache, std::shared_ptr<ConnectionPool> pool,
                std::shared_ptr<DomainReads> reads, std::shared_ptr<FactsReader> facts,
                std::shared_ptr<const PageTokenKey> tokens)
      : cache_(std::move(cache)),
        pool_(std::move(pool)),
        reads_(std::move(reads)),
        facts_(std::move(facts)),
        tokens_(std::move(tokens)) {}

  // One page, on the caller's lease (which may be replaced; see
  // BulkStatsReader::Read).
  absl::StatusOr<v1::ListDomainsResponse> List(const ListQuery& query,
                                               ConnectionPool::Lease* lease,
                                               absl::Time deadline);
  absl::StatusOr<v1::Domain> Get(const GetQuery& query, absl::Time deadline);

 private:
  const std::shared_ptr<DomainCache> cache_;
  const std::shared_ptr<ConnectionPool> pool_;
  const std::shared_ptr<DomainReads> reads_;
  const std::shared_ptr<FactsReader> facts_;
  const std::shared_ptr<const PageTokenKey> tokens_;
};

}  // namespace virtgate
