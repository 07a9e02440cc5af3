#include "tests/bench/bench_listing.h"

#include "absl/strings/str_cat.h"
#include "server/libvirt/handles.h"
#include "tests/support/libvirt_direct.h"
#include "tests/support/server_process.h"

namespace virtgate::bench {

absl::StatusOr<int> ListThroughVirtgate(v1::Hypervisor::Stub* stub, int page_size,
                                        v1::ReadConsistency consistency, absl::Duration timeout) {
  v1::ListDomainsRequest request;
  request.set_page_size(page_size);
  request.set_consistency(consistency);
  int got = 0;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(testing::DeadlineIn(timeout));
    v1::ListDomainsResponse response;
    const grpc::Status s = stub->ListDomains(&ctx, request, &response);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("ListDomains: ", s.error_message()));
    }
    for (const v1::Domain& d : response.domains()) {
      if (d.uuid().empty() || d.name().empty() || d.state() == v1::DOMAIN_STATE_UNSPECIFIED) {
        return absl::DataLossError(
            absl::StrCat("an incomplete Domain record: ", d.ShortDebugString()));
      }
    }
    got += response.domains_size();
    if (response.next_page_token().empty()) return got;
    request.set_page_token(response.next_page_token());
  }
}

absl::StatusOr<int> ListAllWithStats(virConnectPtr conn) {
  virDomainPtr* doms = nullptr;
  const int listed = virConnectListAllDomains(conn, &doms, 0);
  if (listed < 0) return testing::LastError("virConnectListAllDomains");
  AdoptDomainArray(doms, listed);
  virDomainStatsRecordPtr* records = nullptr;
  const int n = virConnectGetAllDomainStats(conn, kAllGroups, &records,
                                            VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
  if (n < 0) return testing::LastError("virConnectGetAllDomainStats");
  DomainStatsList{records};
  return std::min(listed, n);
}

absl::StatusOr<int> GetAllStats(virConnectPtr conn) {
  virDomainStatsRecordPtr* records = nullptr;
  const int n = virConnectGetAllDomainStats(conn, kAllGroups, &records,
                                            VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
  if (n < 0) return testing::LastError("virConnectGetAllDomainStats");
  DomainStatsList{records};
  return n;
}

absl::StatusOr<int> PerDomainInfo(virConnectPtr conn) {
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) return testing::LastError("virConnectListAllDomains");
  int read = 0;
  for (const DomainHandle& d : AdoptDomainArray(doms, n)) {
    virDomainInfo info;
    if (virDomainGetInfo(d.get(), &info) < 0) return testing::LastError("virDomainGetInfo");
    ++read;
  }
  return read;
}

}  // namespace virtgate::bench
