// The raw libvirt floor of a listing: what a direct client does to read every
// domain with its stats (virConnectListAllDomains, then one
// virDomainListGetStats for them, NOWAIT). Header-only, shared by the listing
// benchmarks.
#pragma once

#include <libvirt/libvirt.h>

#include <vector>

#include "server/libvirt/handles.h"

namespace virtgate::bench {

// Owns what libvirt returned, so a benchmark can stop its clock before
// freeing it (as virtgate's own listing is timed without its frees).
struct DirectListing {
  std::vector<DomainHandle> domains;
  DomainStatsList records;
  int listed = -1;      // virConnectListAllDomains' result
  int with_stats = -1;  // virDomainListGetStats' result
};

inline DirectListing ListAllWithStats(virConnectPtr conn, unsigned int groups) {
  DirectListing out;
  virDomainPtr* doms = nullptr;
  out.listed = virConnectListAllDomains(conn, &doms, 0);
  out.domains = AdoptDomainArray(doms, out.listed);
  std::vector<virDomainPtr> list;
  for (const DomainHandle& d : out.domains) list.push_back(d.get());
  list.push_back(nullptr);  // NULL-terminated
  virDomainStatsRecordPtr* records = nullptr;
  out.with_stats = virDomainListGetStats(list.data(), groups, &records,
                                         VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
  out.records.reset(records);
  return out;
}

}  // namespace virtgate::bench
