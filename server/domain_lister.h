// DomainLister: ListDomains and GetDomain against one libvirt connection.
//
// Cost per ListDomains page, whatever the number of domains: one
// virConnectListAllDomains (more only past libvirt's 16,384-domains-per-call
// limit, see ListAllDomains), two more filtered by TRANSIENT and AUTOSTART
// (persistence and autostart change without any other sign, so they are
// read for every listing; skipped when a filter pins them), and one bulk
// virDomainListGetStats for the page's domains, with NOWAIT where the driver
// takes it, so a domain holding its job lock does not stall the listing.
// vCPUs and memory, where bulk stats lack them, come from DomainFactsCache.
// A domain with a call stuck on it (BusyDomains) is left out of the bulk
// stats and reported from its last known facts with `stale` set.
//
// Thread-safe: many workers call it at once, each with its own connection.
// Every method blocks on libvirt: call from worker threads only.
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/busy_domains.h"
#include "server/connection_pool.h"
#include "server/domain_facts_cache.h"
#include "server/libvirt_handles.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// "6695EB01F6A4830479AA97F2502E193F" or any case/dash variant ->
// "6695eb01-f6a4-8304-79aa-97f2502e193f"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> NormalizeUuid(absl::string_view text);

// virConnectListAllDomains, split into several calls by flag groups when
// libvirt refuses to return that many domains in one RPC (16,384). A domain
// appears once, even if it changed between the split calls.
absl::StatusOr<std::vector<DomainHandle>> ListAllDomains(virConnectPtr conn, unsigned int flags);

class DomainLister {
 public:
  struct Options {
    int default_page_size = 500;
    int max_page_size = 5000;
  };

  DomainLister(Options options, std::shared_ptr<DomainFactsCache> cache)
      : options_(options), cache_(std::move(cache)) {}

  // `deadline` is the caller's: a call about one domain still running past
  // it marks that domain busy (see BusyDomains).
  // need_facts = false: states only, for the resync: one state-group bulk
  // call per page, which no domain (not even a frozen QEMU) can hold up, and
  // the flagged lists; no per-domain calls, vCPUs and memory may be 0.
  // `*connection_left` (optional): the page stopped early (with a
  // next_page_token) because a call stuck on a guest was left running on
  // `conn`; continue on another connection.
  absl::StatusOr<v1::ListDomainsResponse> List(virConnectPtr conn,
                                               const v1::ListDomainsRequest& request,
                                               absl::Time deadline = absl::InfiniteFuture(),
                                               bool need_facts = true,
                                               bool* connection_left = nullptr);
  absl::StatusOr<v1::Domain> Get(virConnectPtr conn, const v1::GetDomainRequest& request,
                                 absl::Time deadline = absl::InfiniteFuture());
  // Every domain, all pages in one go (one view, for a watch's initial
  // state or a resync after reconnecting).
  absl::StatusOr<std::vector<v1::Domain>> ListEverything(
      virConnectPtr conn, absl::Time deadline = absl::InfiniteFuture(), bool need_facts = true);

  // Domains with a call stuck on them now (reported stale, not waited for).
  const BusyDomains& busy() const { return *busy_; }

  // Lets a listing move off a connection that a stuck bulk call poisons
  // (libvirt's client then serves its other calls only at its next
  // wakeup): `retire` stops the pool leasing it (false if it cannot),
  // `acquire` leases another. Set once, before the lister is used.
  // `hold` gives a call that may be left behind an admission of its own on
  // its connection (see ConnectionPool::Hold).
  struct ConnectionHooks {
    std::function<bool(virConnectPtr)> retire;
    std::function<absl::StatusOr<ConnectionPool::Lease>(absl::Time deadline)> acquire;
    std::function<std::optional<ConnectionPool::Lease>(virConnectPtr)> hold;
  };
  void SetConnectionHooks(ConnectionHooks hooks) { hooks_ = std::move(hooks); }

  // Validation that needs no libvirt (so bad requests fail before queueing).
  static absl::Status ValidateListRequest(const v1::ListDomainsRequest& request);
  static absl::Status ValidateGetRequest(const v1::GetDomainRequest& request);

 private:
  struct Stats;
  static constexpr unsigned int kAllGroups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                                             VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU;
  // Bulk stats (`groups`) for `doms`; NOWAIT when the driver accepts it
  // (`nowait` turns false once it refuses).
  static absl::StatusOr<std::vector<Stats>> BulkStats(const std::vector<virDomainPtr>& doms,
                                                      std::atomic<bool>* nowait,
                                                      unsigned int groups);
  // BulkStats, but not held up by a domain whose QEMU does not answer: the
  // call runs on a thread of its own (holding an admission on its
  // connection); if it is not back within a budget, another connection is
  // leased, virDomainGetControlInfo (no job, no monitor) on it finds the
  // domains whose monitor has been occupied that long, they are marked busy
  // until the stuck call returns and added to `stuck`, and the stats of the
  // others are read again there. `*left_behind`: the call is still running
  // on the domains' connection, so the caller must make no more calls on it.
  absl::StatusOr<std::vector<Stats>> BulkStatsAvoidingStuck(
      const std::vector<virDomainPtr>& doms, absl::Time deadline,
      absl::flat_hash_set<std::string>* stuck, bool* left_behind);
  // Builds the Domain for one listed domain; nullopt if it vanished meanwhile.
  // may_call = false: no calls on dom's connection (facts from memory, stale
  // if none are cached).
  std::optional<v1::Domain> Describe(virDomainPtr dom, const std::string& uuid,
                                     const Stats* stats, bool refresh_facts,
                                     absl::Time deadline, bool need_facts = true,
                                     bool may_call = true);

  const Options options_;
  const std::shared_ptr<DomainFactsCache> cache_;
  // Shared with bulk calls left running on their own threads.
  const std::shared_ptr<std::atomic<bool>> nowait_supported_ =
      std::make_shared<std::atomic<bool>>(true);
  const std::shared_ptr<BusyDomains> busy_ = std::make_shared<BusyDomains>();
  ConnectionHooks hooks_;
};

}  // namespace virtgate
