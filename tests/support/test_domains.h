// Layer 2 of the test support (libvirt only, no server code).
//
// Helpers for defining test-driver domains through a direct libvirt
// connection (as another tool would) and reading libvirt's ground truth.
#pragma once

#include <libvirt/libvirt.h>

#include <map>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace virtgate::testing {

// Minimal domain XML the test driver accepts; with a UUID if one is given.
std::string TestDomainXml(const std::string& name, const std::string& uuid = "");

// Defines `count` persistent domains "<prefix>NNNNN"; every `start_every`-th
// one (0: none) is also started.
absl::Status DefineDomains(virConnectPtr conn, const std::string& prefix, int count,
                           int start_every);

struct TruthEntry {
  std::string name;
  int state = 0;
  friend bool operator==(const TruthEntry& a, const TruthEntry& b) {
    return a.name == b.name && a.state == b.state;
  }
  friend std::ostream& operator<<(std::ostream& os, const TruthEntry& e) {
    return os << e.name << "/state=" << e.state;
  }
};
// uuid -> (name, state) for every domain, from virConnectListAllDomains and
// virDomainGetState on `conn`: what libvirt itself reports (the name and
// state of GroundTruth in libvirt_direct.h).
absl::StatusOr<std::map<std::string, TruthEntry>> GroundTruth(virConnectPtr conn,
                                                              unsigned int flags = 0);

}  // namespace virtgate::testing
