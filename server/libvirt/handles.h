// RAII owners for libvirt objects: every virConnectPtr and virDomainPtr the
// server holds is one of these, so no virDomainFree is scattered around.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdint>
#include <memory>
#include <string>
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

// Local reads of a domain object: libvirt keeps uuid, name and id in the
// virDomainPtr itself (also for remote connections), so none is a round trip.
// Formatted here: libvirt's own formatting (virDomainGetUUIDString) goes
// through printf, which showed in listing profiles.
inline std::string DomainUuid(virDomainPtr dom) {
  unsigned char raw[VIR_UUID_BUFLEN];
  if (virDomainGetUUID(dom, raw) < 0) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(VIR_UUID_STRING_BUFLEN - 1);
  for (int i = 0; i < VIR_UUID_BUFLEN; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[raw[i] >> 4]);
    out.push_back(kHex[raw[i] & 0xf]);
  }
  return out;
}
inline std::string DomainName(virDomainPtr dom) {
  const char* name = virDomainGetName(dom);
  return name ? name : "";
}
// 0 while inactive (libvirt says -1).
inline uint32_t DomainId(virDomainPtr dom) {
  const unsigned int id = virDomainGetID(dom);
  return id == static_cast<unsigned int>(-1) ? 0 : id;
}

// Takes ownership of the array virConnectListAllDomains returns (n entries).
inline std::vector<DomainHandle> AdoptDomainArray(virDomainPtr* doms, int n) {
  std::vector<DomainHandle> out;
  out.reserve(n > 0 ? n : 0);
  for (int i = 0; i < n; ++i) out.emplace_back(doms[i]);
  free(doms);  // the array itself is malloc'ed by libvirt
  return out;
}

}  // namespace virtgate
