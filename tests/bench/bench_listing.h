// The listings virtgate_bench times: through virtgated, and the raw libvirt
// floor over a direct connection to the same libvirtd.
#pragma once

#include <libvirt/libvirt.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate::bench {

// The stats groups virtgate reads for a Domain record.
constexpr unsigned int kAllGroups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                                    VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU;
// The largest page virtgated serves.
constexpr int kLargestPage = 5000;

// One whole listing through virtgated (every page), each call with
// `timeout`: the number of Domain records, or the first call's error. A
// record without a uuid, name or state is an error.
absl::StatusOr<int> ListThroughVirtgate(v1::Hypervisor::Stub* stub, int page_size,
                                        v1::ReadConsistency consistency,
                                        absl::Duration timeout = absl::Seconds(60));

// The floor: virConnectListAllDomains + virConnectGetAllDomainStats (every
// group virtgate reads, NOWAIT), and freeing what they returned.
absl::StatusOr<int> ListAllWithStats(virConnectPtr conn);
// virConnectGetAllDomainStats alone (same groups).
absl::StatusOr<int> GetAllStats(virConnectPtr conn);
// The naive client: list, then virDomainGetInfo for every domain.
absl::StatusOr<int> PerDomainInfo(virConnectPtr conn);

}  // namespace virtgate::bench
