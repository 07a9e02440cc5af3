// RAII owners for libvirt objects: every virConnectPtr and virDomainPtr the
// server holds is one of these, so no virDomainFree is scattered around.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>
#include <vector>

namespace virtgate {

struct ConnectCloser {
  void operator()(virConnectPtr conn) const { virConnectClose(conn); }
};
using ConnectHandle = std::unique_ptr<virConnect, ConnectCloser>;

struct DomainFreer {
  void operator()(virDomainPtr dom) const { virDomainFree(dom); }
};
using DomainHandle = std::unique_ptr<virDomain, DomainFreer>;

struct DomainStatsFreer {
  void operator()(virDomainStatsRecordPtr* stats) const { virDomainStatsRecordListFree(stats); }
};
using DomainStatsList = std::unique_ptr<virDomainStatsRecordPtr, DomainStatsFreer>;

// Takes ownership of the array virConnectListAllDomains returns (n entries).
inline std::vector<DomainHandle> AdoptDomainArray(virDomainPtr* doms, int n) {
  std::vector<DomainHandle> out;
  out.reserve(n > 0 ? n : 0);
  for (int i = 0; i < n; ++i) out.emplace_back(doms[i]);
  free(doms);  // the array itself is malloc'ed by libvirt
  return out;
}

}  // namespace virtgate
