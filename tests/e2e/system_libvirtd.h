// SystemLibvirtd: makes sure the host's system libvirtd serves qemu:///system
// with a working QEMU driver, for the end-to-end tests and the QEMU benchmark.
//
// - If a libvirtd already answers qemu:///system, it is used as it is and
//   left running.
// - Otherwise, as root, virtlogd (unless its socket answers) and libvirtd are
//   started as children of the test, in the foreground, on their standard
//   system sockets (/run/libvirt/...), with a config file of ours that needs
//   no polkit (this machine class has no D-Bus): the read-only socket is open
//   to every local user, the read-write one to root and group `libvirt`.
//   Only what was started here is stopped again (SIGTERM by pid, SIGKILL if it
//   hangs), and it dies with the test process (PR_SET_PDEATHSIG) if the test
//   crashes.
// - Where /dev/kvm exists but the QEMU user (libvirt-qemu, group kvm) cannot
//   open it — a host without udev, where the node stays root-only 0600 —
//   libvirt 9.0's capability cache flip-flops: its root-run probe sees KVM,
//   its validity check (as the QEMU user) does not, so every guest start
//   re-probes QEMU twice (about 4 s, serialized across starts). As root, the
//   node is given Debian's udev default (root:kvm 0660) for the duration, and
//   its owner and mode are restored afterwards. Guests stay TCG
//   (<domain type='qemu'>) either way.
//
// One end-to-end process at a time per machine: Ensure() first takes an
// exclusive lock on /run/lock/virtgate-e2e.lock (waiting up to 4 minutes),
// held until destruction, so runs from other build trees or ctest
// invocations never share, start or stop the daemon under each other.
//
// FAILED_PRECONDITION from Ensure() means the machine truly cannot run the
// tests (say what is missing): no QEMU binary, no libvirtd, not root and no
// daemon running, or the QEMU driver did not initialise. Any other error is a
// failure.
//
// Create and destroy it on the main thread (the children's death signal is
// tied to the thread that forked them).
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/server_process.h"

namespace virtgate::e2e {

inline constexpr char kSystemUri[] = "qemu:///system";
inline constexpr char kReadOnlySocket[] = "/run/libvirt/libvirt-sock-ro";
inline constexpr char kQemuBinary[] = "/usr/bin/qemu-system-x86_64";
// virtgated's own temporary directories: /tmp/<prefix>.XXXXXX (a run killed
// midway leaves them; the next Ensure() removes them).
inline constexpr char kServerDirPrefix[] = "vgte2e-vgd";

// virtgated (the binary) on qemu:///system, as the end-to-end tests run it:
// --shutdown_grace=2s, SIGTERM and up to 10 s to exit when destroyed.
testing::ServerProcess::Config SystemServerConfig();

class SystemLibvirtd {
 public:
  static absl::StatusOr<std::unique_ptr<SystemLibvirtd>> Ensure();
  ~SystemLibvirtd();  // stops only what Ensure started; restores /dev/kvm

  SystemLibvirtd(const SystemLibvirtd&) = delete;
  SystemLibvirtd& operator=(const SystemLibvirtd&) = delete;

  // True if this object started libvirtd (so its socket config is ours:
  // auth none, rw socket for root and group libvirt, ro socket for all).
  bool started_libvirtd() const { return libvirtd_pid_ > 0; }
  pid_t libvirtd_pid() const { return libvirtd_pid_; }
  // One line for the test log: what was found, started or changed.
  const std::string& summary() const { return summary_; }
  // libvirtd's log when started here (empty otherwise).
  std::string LibvirtdLog() const;

 private:
  SystemLibvirtd() = default;
  absl::Status StartVirtlogdIfNeeded();
  absl::Status StartLibvirtd();
  void MakeKvmUsableByQemuUser();

  int lock_fd_ = -1;
  std::string dir_;  // temp dir: config and logs of daemons started here
  pid_t virtlogd_pid_ = -1;
  pid_t libvirtd_pid_ = -1;
  struct KvmNode {
    uid_t uid;
    gid_t gid;
    mode_t mode;
  };
  std::optional<KvmNode> kvm_restore_;
  std::string summary_;
};

}  // namespace virtgate::e2e
