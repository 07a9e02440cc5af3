// DomainReads: the libvirt calls virtgated makes to read domains, each one
// counted in CallCounts by procedure. Stateless but for whether the driver
// takes NOWAIT bulk stats. Every method blocks on libvirt: call from worker
// threads (or the feed's) only. Thread-safe.
//
// libvirt returns at most 16,384 domains per call (REMOTE_DOMAIN_LIST_MAX);
// ListAll and AllStats split a call by filter flags past that, and Stats
// sends explicit lists in chunks of that size.
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/libvirt/call_counts.h"
#include "server/libvirt/handles.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// What one bulk-stats record says; optional fields where the driver did not
// report them (the test driver's records carry the state only).
struct DomainStats {
  std::string uuid;
  std::string name;
  uint32_t id = 0;  // 0 while inactive
  std::optional<int> state;  // virDomainState
  int reason = 0;
  std::optional<uint64_t> cpu_time_ns;
  std::optional<uint64_t> balloon_current_kib;
  std::optional<uint64_t> balloon_maximum_kib;
  std::optional<uint32_t> vcpus;

  // vCPUs and both memory figures (QEMU's records have them): nothing left
  // for a per-domain call to add.
  bool has_facts() const { return vcpus && balloon_current_kib && balloon_maximum_kib; }
};

// A Domain with what `stats` says of identity and state (stale when the
// record has no state); the other fields are left unset.
v1::Domain DomainFromStats(const DomainStats& stats);

// virDomainGetInfo's answer.
struct DomainInfo {
  int state = VIR_DOMAIN_NOSTATE;
  uint32_t vcpus = 0;
  uint64_t memory_kib = 0;
  uint64_t max_memory_kib = 0;
};

class DomainReads {
 public:
  // The stats groups that carry a Domain's fields: state, CPU time, balloon
  // and vCPUs. Only the state group never touches a QEMU monitor.
  static constexpr unsigned int kFactGroups = VIR_DOMAIN_STATS_STATE |
                                              VIR_DOMAIN_STATS_CPU_TOTAL |
                                              VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU;

  explicit DomainReads(std::shared_ptr<CallCounts> counts) : counts_(std::move(counts)) {}

  // virConnectListAllDomains with `flags`; a domain appears once, even if it
  // changed between split calls.
  absl::StatusOr<std::vector<DomainHandle>> ListAll(virConnectPtr conn, unsigned int flags);
  // The UUIDs ListAll would return (for the short flagged lists).
  absl::StatusOr<absl::flat_hash_set<std::string>> ListUuids(virConnectPtr conn,
                                                             unsigned int flags);
  // virDomainListGetStats for `doms`, all of one connection; NOWAIT where the
  // driver takes it, so a domain holding its job lock does not stall the
  // call. Domains undefined meanwhile are left out.
  absl::StatusOr<std::vector<DomainStats>> Stats(const std::vector<virDomainPtr>& doms,
                                                 unsigned int groups);
  // virConnectGetAllDomainStats: every domain with its stats in one call
  // (split past the limit; listing then stats in chunks if no split helps).
  absl::StatusOr<std::vector<DomainStats>> AllStats(virConnectPtr conn, unsigned int groups);

  absl::StatusOr<DomainHandle> LookupByUuid(virConnectPtr conn, const std::string& uuid);
  absl::StatusOr<DomainHandle> LookupByName(virConnectPtr conn, const std::string& name);
  absl::StatusOr<DomainInfo> Info(virDomainPtr dom);
  absl::StatusOr<bool> IsPersistent(virDomainPtr dom);
  absl::StatusOr<bool> Autostart(virDomainPtr dom);
  // virDomainGetControlInfo (no job, no monitor): how long the domain's QEMU
  // monitor has been occupied; zero when it is not.
  absl::StatusOr<absl::Duration> MonitorOccupiedFor(virDomainPtr dom);

  CallCounts& counts() { return *counts_; }

 private:
  absl::Status ListInto(virConnectPtr conn, unsigned int flags,
                        std::vector<std::pair<std::string, DomainHandle>>* out);
  absl::Status AllStatsInto(virConnectPtr conn, unsigned int groups, unsigned int flags,
                            std::vector<DomainStats>* out);
  // One stats call through `call`, with NOWAIT first while the driver takes it.
  template <typename Call>
  int WithNowait(const char* procedure, Call call, virDomainStatsRecordPtr** records,
                 absl::Status* error);

  const std::shared_ptr<CallCounts> counts_;
  std::atomic<bool> nowait_{true};
};

// "6695EB01F6A4830479AA97F2502E193F" or any case/dash variant ->
// "6695eb01-f6a4-8304-79aa-97f2502e193f"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> NormalizeUuid(absl::string_view text);

}  // namespace virtgate
