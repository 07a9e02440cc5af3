#include "server/libvirt/host_info_reader.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "server/libvirt/errors.h"

namespace virtgate {

std::string FormatLibvirtVersion(unsigned long version) {
  return absl::StrCat(version / 1000000, ".", (version / 1000) % 1000, ".", version % 1000);
}

absl::StatusOr<v1::HostInfo> ReadHostInfo(virConnectPtr conn) {
  v1::HostInfo info;
  char* hostname = virConnectGetHostname(conn);
  if (hostname == nullptr) return LastLibvirtError("virConnectGetHostname");
  info.set_hostname(hostname);
  free(hostname);

  const char* type = virConnectGetType(conn);
  if (type == nullptr) return LastLibvirtError("virConnectGetType");
  info.set_hypervisor_type(type);

  unsigned long version = 0;
  if (virConnectGetVersion(conn, &version) < 0) return LastLibvirtError("virConnectGetVersion");
  info.set_hypervisor_version(FormatLibvirtVersion(version));
  if (virConnectGetLibVersion(conn, &version) < 0) {
    return LastLibvirtError("virConnectGetLibVersion");
  }
  info.set_libvirt_version(FormatLibvirtVersion(version));

  virNodeInfo node;
  if (virNodeGetInfo(conn, &node) < 0) return LastLibvirtError("virNodeGetInfo");
  info.set_cpu_model(node.model);
  info.set_cpus(node.cpus);
  info.set_cpu_mhz(node.mhz);
  info.set_numa_nodes(node.nodes);
  info.set_cpu_sockets(node.sockets);
  info.set_cpu_cores(node.cores);
  info.set_cpu_threads(node.threads);
  info.set_memory_kib(node.memory);
  return info;
}

absl::Status HostFacts::Refresh(virConnectPtr conn) {
  absl::StatusOr<v1::HostInfo> read = ReadHostInfo(conn);
  if (!read.ok()) return read.status();
  absl::MutexLock lock(&mu_);
  facts_ = *std::move(read);
  return absl::OkStatus();
}

std::optional<v1::HostInfo> HostFacts::Get() const {
  absl::MutexLock lock(&mu_);
  return facts_;
}

}  // namespace virtgate
