// DomainHandles: the virDomainPtr handles one connection holds, by UUID, so
// a call that names its domains (bulk stats for one page) need not list
// every domain again to get them. A handle is good for as long as its
// domain exists: libvirtd finds domains by UUID, so a handle of a domain
// since renamed or restarted still works, and one of a domain since
// undefined is skipped by bulk stats.
//
// One per pool connection (ConnectionPool::Lease::handles()); it dies with
// the connection. Thread-safe; never calls libvirt under its lock.
#pragma once

#include <libvirt/libvirt.h>

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/libvirt/domain_reads.h"
#include "server/libvirt/handles.h"

namespace virtgate {

class DomainHandles {
 public:
  // Handles on `conn` (the caller's own references) for `uuids`, in order;
  // null where the domain does not exist. Those not held yet are looked up
  // one by one when few (one round trip each), or all domains are listed
  // once when many (which also forgets domains that are gone).
  absl::StatusOr<std::vector<DomainHandle>> Resolve(virConnectPtr conn,
                                                    const std::vector<std::string>& uuids,
                                                    DomainReads* reads);

  // Replaces what is held with a full listing just made on this connection.
  void Replace(const std::vector<DomainHandle>& all);

  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, DomainHandle> by_uuid_ ABSL_GUARDED_BY(mu_);
  // How many domains the last full listing found: bounds what lookups of
  // domains defined since (and perhaps undefined again) may add.
  size_t listed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace virtgate
