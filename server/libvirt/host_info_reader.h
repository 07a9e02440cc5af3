// Reads HostInfo's host fields from one libvirt connection (6 round trips),
// and HostFacts, which keeps the last reading: the server reads it on every
// (re)connect, so GetHostInfo answers from memory, at once, even while
// libvirtd is stalled or gone.
#pragma once

#include <libvirt/libvirt.h>

#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// Fills everything but uri, connection and server_version. Blocks.
absl::StatusOr<v1::HostInfo> ReadHostInfo(virConnectPtr conn);

// The last successful ReadHostInfo. Thread-safe.
class HostFacts {
 public:
  // Reads now (blocks on libvirt); keeps the old reading on failure.
  absl::Status Refresh(virConnectPtr conn);
  std::optional<v1::HostInfo> Get() const;

 private:
  mutable absl::Mutex mu_;
  std::optional<v1::HostInfo> facts_ ABSL_GUARDED_BY(mu_);
};

// 9000000 -> "9.0.0" (libvirt's major * 1,000,000 + minor * 1,000 + micro).
std::string FormatLibvirtVersion(unsigned long version);

}  // namespace virtgate
