// GuestSet: uniquely named tiny QEMU guests (TCG, 32 MiB, 1 vCPU, machine
// pc, no disk: they idle in SeaBIOS) on qemu:///system, always cleaned up.
//
// Names are "vgte2e-<test pid>-<tag>". Guests are started with
// VIR_DOMAIN_START_AUTODESTROY on one of the set's own connections, so
// libvirtd destroys them even if the test dies without cleaning up; the
// destructor destroys (after SIGCONT, in case a test stopped the QEMU
// process) and undefines every domain with the set's prefix, whatever
// happened, and removes their QEMU logs (/var/log/libvirt/qemu/<name>.log).
// SweepLeftovers() removes the definitions and logs a crashed earlier run
// left (guests of a pid that no longer exists).
//
// Thread-safe for concurrent operations on different connections (libvirt
// connections are thread-safe).
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/libvirt/handles.h"

namespace virtgate::e2e {

inline constexpr char kGuestPrefix[] = "vgte2e-";

std::string TinyGuestXml(const std::string& name);

class GuestSet {
 public:
  // Opens `connections` read-write connections to qemu:///system.
  static absl::StatusOr<std::unique_ptr<GuestSet>> Create(int connections = 4);
  ~GuestSet();

  GuestSet(const GuestSet&) = delete;
  GuestSet& operator=(const GuestSet&) = delete;

  // "vgte2e-<pid>-": every guest of this set, and nothing else, starts so.
  const std::string& prefix() const { return prefix_; }
  int connections() const { return static_cast<int>(conns_.size()); }
  virConnectPtr conn(int i = 0) const { return conns_[i % conns_.size()].get(); }

  // Defines prefix + tag; returns the full name.
  absl::StatusOr<std::string> Define(const std::string& tag);
  // Starts it (autodestroy, tied to connection `conn_index`) and waits for
  // nothing more: virDomainCreate returns once QEMU runs.
  absl::Status Start(const std::string& name, int conn_index = 0);
  absl::Status Suspend(const std::string& name, int conn_index = 0);
  absl::Status Resume(const std::string& name, int conn_index = 0);
  absl::Status Destroy(const std::string& name, int conn_index = 0);
  absl::Status Undefine(const std::string& name, int conn_index = 0);
  absl::StatusOr<DomainHandle> Lookup(const std::string& name, int conn_index = 0) const;
  absl::StatusOr<std::string> Uuid(const std::string& name) const;

  // The QEMU process of a running guest, from /run/libvirt/qemu/<name>.pid.
  static absl::StatusOr<pid_t> QemuPid(const std::string& name);

  // Destroys and undefines every "vgte2e-<pid>-*" domain whose pid is not a
  // live process (left by a crashed run). Returns what it removed, for the log.
  static std::string SweepLeftovers(virConnectPtr conn);

 private:
  GuestSet() = default;
  std::string prefix_;
  std::vector<ConnectHandle> conns_;
};

// SIGSTOP on a QEMU process for the scope; SIGCONT when it ends, however the
// test leaves it.
class ScopedSigstop {
 public:
  explicit ScopedSigstop(pid_t pid);
  ~ScopedSigstop();
  ScopedSigstop(const ScopedSigstop&) = delete;
  ScopedSigstop& operator=(const ScopedSigstop&) = delete;
  bool ok() const { return ok_; }

 private:
  pid_t pid_;
  bool ok_ = false;
};

}  // namespace virtgate::e2e
