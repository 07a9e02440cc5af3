// Reads HostInfo's host fields from one libvirt connection (6 round trips;
// GetHostInfo is rare, so nothing is cached). Blocks: worker threads only.
#pragma once

#include <libvirt/libvirt.h>

#include "absl/status/statusor.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// Fills everything but uri, connection and server_version.
absl::StatusOr<v1::HostInfo> ReadHostInfo(virConnectPtr conn);

// 9000000 -> "9.0.0" (libvirt's major * 1,000,000 + minor * 1,000 + micro).
std::string FormatLibvirtVersion(unsigned long version);

}  // namespace virtgate
