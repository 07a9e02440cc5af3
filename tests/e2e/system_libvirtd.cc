#include "tests/e2e/system_libvirtd.h"

#include <fcntl.h>
#include <grp.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/libvirt/handles.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/libvirt_direct.h"
#include "tests/support/wait_for.h"

namespace virtgate::e2e {
namespace {

using testing::ChildOptions;
using testing::DescribeWaitStatus;
using testing::EnsureEventLoop;
using testing::LastError;
using testing::ReadFile;
using testing::SpawnChild;
using testing::StopChild;
using testing::Tail;
using testing::WaitFor;
using testing::WaitForExit;

constexpr char kLibvirtd[] = "/usr/sbin/libvirtd";
constexpr char kVirtlogd[] = "/usr/sbin/virtlogd";
constexpr char kVirtlogdSocket[] = "/run/libvirt/virtlogd-sock";
constexpr char kKvm[] = "/dev/kvm";
constexpr char kLockFile[] = "/run/lock/virtgate-e2e.lock";
// /dev/kvm's original owner and mode while a run has changed them.
constexpr char kKvmRecord[] = "/run/lock/virtgate-e2e.kvm";
// Debian's QEMU user and group (qemu.conf's defaults there).
constexpr char kQemuUser[] = "libvirt-qemu";
constexpr char kKvmGroup[] = "kvm";

bool UnixSocketAnswers(const char* path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

struct OpenResult {
  ConnectHandle conn;
  int error_code = 0;
  std::string error;
};

OpenResult OpenSystem() {
  OpenResult r;
  r.conn.reset(virConnectOpenReadOnly(kSystemUri));
  if (!r.conn) {
    const virError* e = virGetLastError();
    r.error_code = e ? e->code : 0;
    r.error = e && e->message ? e->message : "unknown libvirt error";
    virResetLastError();
  }
  return r;
}

// What the daemon's QEMU driver must offer for our tiny guests.
absl::Status CheckQemuDriver(virConnectPtr conn) {
  const char* type = virConnectGetType(conn);
  if (type == nullptr || std::strcmp(type, "QEMU") != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kSystemUri, " is served by driver ", type ? type : "?", ", not QEMU"));
  }
  char* caps = virConnectGetCapabilities(conn);
  if (caps == nullptr) return LastError("virConnectGetCapabilities");
  const std::string text = caps;
  free(caps);
  if (!absl::StrContains(text, "<arch name='x86_64'>") ||
      !absl::StrContains(text, "<domain type='qemu'")) {
    // qemu-system-x86 is installed (checked first): a driver that still
    // offers no TCG guests is broken, not missing.
    return absl::InternalError(
        "libvirt's QEMU driver offers no x86_64 TCG guests (<domain type='qemu'>) although "
        "qemu-system-x86 is installed");
  }
  return absl::OkStatus();
}

}  // namespace

testing::ServerProcess::Config SystemServerConfig() {
  testing::ServerProcess::Config config;
  config.libvirt_uri = kSystemUri;
  config.shutdown_grace = absl::Seconds(2);
  config.stop_grace = absl::Seconds(10);
  config.temp_dir_prefix = kServerDirPrefix;
  return config;
}

absl::StatusOr<std::unique_ptr<SystemLibvirtd>> SystemLibvirtd::Ensure() {
  if (access(kQemuBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kQemuBinary, " not found: apt-get install qemu-system-x86 to run the QEMU tests"));
  }
  if (absl::Status s = EnsureEventLoop(); !s.ok()) return s;
  std::unique_ptr<SystemLibvirtd> host(new SystemLibvirtd());
  // The lock file is removed by its holder when done, so a lock taken on a
  // file that has since been replaced is no lock: check, and take it again.
  auto try_lock = [&] {
    if (host->lock_fd_ < 0) {
      host->lock_fd_ = open(kLockFile, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
      if (host->lock_fd_ < 0) return false;
    }
    if (flock(host->lock_fd_, LOCK_EX | LOCK_NB) != 0) return false;
    struct stat held {}, now {};
    if (fstat(host->lock_fd_, &held) == 0 && stat(kLockFile, &now) == 0 &&
        held.st_dev == now.st_dev && held.st_ino == now.st_ino) {
      return true;
    }
    close(host->lock_fd_);
    host->lock_fd_ = -1;
    return false;
  };
  if (!WaitFor(try_lock, absl::Minutes(4))) {
    return absl::DeadlineExceededError(absl::StrCat(
        "another end-to-end run has held ", kLockFile, " for 4 minutes"));
  }
  // Holding the lock, no other run is alive: temp dirs of ours are left by
  // one that was killed.
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/tmp", ignored)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "vgte2e-host.") || absl::StartsWith(name, absl::StrCat(kServerDirPrefix, "."))) {
      std::filesystem::remove_all(entry.path(), ignored);
    }
  }
  host->MakeKvmUsableByQemuUser();
  OpenResult first = OpenSystem();
  if (first.conn) {
    if (absl::Status s = CheckQemuDriver(first.conn.get()); !s.ok()) return s;
    absl::StrAppend(&host->summary_, "using the libvirtd already serving ", kSystemUri);
    return host;
  }
  if (geteuid() != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no libvirtd serves ", kSystemUri, " (", first.error,
        ") and the test is not root, so it cannot start one"));
  }
  if (access(kLibvirtd, X_OK) != 0 || access(kVirtlogd, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kLibvirtd, " or ", kVirtlogd,
        " not found: apt-get install libvirt-daemon-system to run the QEMU tests"));
  }
  char dir[] = "/tmp/vgte2e-host.XXXXXX";
  if (mkdtemp(dir) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  host->dir_ = dir;
  if (absl::Status s = host->StartVirtlogdIfNeeded(); !s.ok()) return s;
  if (absl::Status s = host->StartLibvirtd(); !s.ok()) return s;
  OpenResult up = OpenSystem();
  if (!up.conn) {
    // Everything it needs is installed: a daemon that starts but does not
    // serve is a breakage to report, not a machine to skip.
    return absl::InternalError(absl::StrCat(
        "libvirtd started but ", kSystemUri, " does not open (", up.error,
        "): its QEMU driver did not initialise; libvirtd log:\n", Tail(host->LibvirtdLog())));
  }
  if (absl::Status s = CheckQemuDriver(up.conn.get()); !s.ok()) return s;
  return host;
}

absl::Status SystemLibvirtd::StartVirtlogdIfNeeded() {
  if (UnixSocketAnswers(kVirtlogdSocket)) {
    absl::StrAppend(&summary_, "virtlogd already running; ");
    return absl::OkStatus();
  }
  const std::string log = dir_ + "/virtlogd.log";
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log, ": ", strerror(errno)));
  ChildOptions o;
  o.argv = {kVirtlogd};
  o.log_fd = log_fd;
  o.death_signal = SIGTERM;
  absl::StatusOr<pid_t> pid = SpawnChild(o);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  virtlogd_pid_ = *pid;
  bool died = false;
  const bool up = WaitFor(
      [&] {
        if (WaitForExit(virtlogd_pid_, absl::Now())) {
          died = true;
          return true;
        }
        return UnixSocketAnswers(kVirtlogdSocket);
      },
      absl::Seconds(30));
  if (died) {
    virtlogd_pid_ = -1;
    return absl::InternalError(absl::StrCat("virtlogd exited at start; log:\n", ReadFile(log)));
  }
  if (!up) return absl::InternalError("virtlogd did not open its socket within 30s");
  absl::StrAppend(&summary_, "started virtlogd (pid ", virtlogd_pid_, "); ");
  return absl::OkStatus();
}

absl::Status SystemLibvirtd::StartLibvirtd() {
  // Default config but for socket access, which by default goes through
  // polkit (D-Bus). Without it: ro socket for all local users, rw socket for
  // root and group libvirt (what Debian's polkit rules grant), no auth.
  const std::string conf = dir_ + "/libvirtd.conf";
  {
    std::ofstream out(conf);
    out << "# written by the virtgate end-to-end tests\n"
        << "auth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n"
        << "unix_sock_ro_perms = \"0777\"\nunix_sock_rw_perms = \"0770\"\n";
    if (getgrnam("libvirt") != nullptr) out << "unix_sock_group = \"libvirt\"\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", conf));
  }
  const std::string log = dir_ + "/libvirtd.log";
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log, ": ", strerror(errno)));
  ChildOptions o;
  o.argv = {kLibvirtd, "-f", conf};
  o.log_fd = log_fd;
  // A crashed test leaves no daemon behind; libvirtd stops gracefully.
  o.death_signal = SIGTERM;
  absl::StatusOr<pid_t> pid = SpawnChild(o);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  libvirtd_pid_ = *pid;
  bool died = false;
  int status = 0;
  OpenResult last;
  const bool up = WaitFor(
      [&] {
        if (std::optional<int> s = WaitForExit(libvirtd_pid_, absl::Now())) {
          died = true;
          status = *s;
          return true;
        }
        last = OpenSystem();
        // Answering, or answering that it has no QEMU driver: either way up.
        return last.conn != nullptr || last.error_code == VIR_ERR_NO_CONNECT;
      },
      absl::Seconds(60));
  if (died) {
    libvirtd_pid_ = -1;
    return absl::InternalError(absl::StrCat("libvirtd ended at start (", DescribeWaitStatus(status),
                                            "); log:\n", Tail(ReadFile(log))));
  }
  if (!up) {
    return absl::InternalError(absl::StrCat("libvirtd did not answer within 60s (", last.error,
                                            "); log:\n", Tail(ReadFile(log))));
  }
  absl::StrAppend(&summary_, "started libvirtd (pid ", libvirtd_pid_, ", config ", conf, ")");
  return absl::OkStatus();
}

void SystemLibvirtd::MakeKvmUsableByQemuUser() {
  struct stat st {};
  if (stat(kKvm, &st) != 0 || !S_ISCHR(st.st_mode)) return;  // no KVM: nothing flip-flops
  // A run that died before restoring the node left its original here.
  {
    unsigned uid = 0, gid = 0, mode = 0;
    if (std::sscanf(ReadFile(kKvmRecord).c_str(), "%u %u %o", &uid, &gid, &mode) == 3) {
      kvm_restore_ = KvmNode{uid, gid, static_cast<mode_t>(mode)};
      absl::StrAppend(&summary_, absl::StrFormat("%s: restoring %d:%d %04o left by an earlier run "
                                                 "at the end; ",
                                                 kKvm, uid, gid, mode));
    }
  }
  const passwd* user = getpwnam(kQemuUser);
  const group* kvm = getgrnam(kKvmGroup);
  if (user == nullptr || kvm == nullptr) return;
  // The user's groups, as QEMU gets them (primary plus supplementary).
  std::vector<gid_t> groups(64);
  int ngroups = static_cast<int>(groups.size());
  if (getgrouplist(kQemuUser, user->pw_gid, groups.data(), &ngroups) < 0) ngroups = 0;
  groups.resize(std::max(ngroups, 0));
  const bool in_group = std::find(groups.begin(), groups.end(), st.st_gid) != groups.end() ||
                        st.st_gid == user->pw_gid;
  const bool user_can = (st.st_uid == user->pw_uid && (st.st_mode & 0600) == 0600) ||
                        (in_group && (st.st_mode & 0060) == 0060) ||
                        (st.st_mode & 0006) == 0006;
  if (user_can) return;
  if (geteuid() != 0) {
    absl::StrAppend(&summary_, kKvm, " is not usable by ", kQemuUser,
                    " (guest starts will be slow: libvirt re-probes QEMU each time); ");
    return;
  }
  // Record the original first, so that even a crashed run gets it restored
  // (by the next one).
  {
    std::ofstream record(kKvmRecord);
    record << absl::StrFormat("%u %u %o\n", st.st_uid, st.st_gid, st.st_mode & 07777);
    if (!record) {
      absl::StrAppend(&summary_, "cannot write ", kKvmRecord, ", so ", kKvm, " is left as is; ");
      return;
    }
  }
  kvm_restore_ = KvmNode{st.st_uid, st.st_gid, static_cast<mode_t>(st.st_mode & 07777)};
  if (chown(kKvm, 0, kvm->gr_gid) != 0 || chmod(kKvm, 0660) != 0) {
    absl::StrAppend(&summary_, "could not give ", kKvm, " root:kvm 0660: ", strerror(errno), "; ");
    return;
  }
  absl::StrAppend(&summary_, kKvm,
                  absl::StrFormat(" set to root:kvm 0660 (was %d:%d %04o; restored afterwards) so "
                                  "libvirt's capability cache stays valid; ",
                                  st.st_uid, st.st_gid, st.st_mode & 07777));
}

std::string SystemLibvirtd::LibvirtdLog() const {
  return dir_.empty() ? "" : ReadFile(dir_ + "/libvirtd.log");
}

SystemLibvirtd::~SystemLibvirtd() {
  if (libvirtd_pid_ > 0) StopChild(libvirtd_pid_, absl::Seconds(20));
  if (virtlogd_pid_ > 0) StopChild(virtlogd_pid_, absl::Seconds(10));
  if (kvm_restore_) {
    if (chown(kKvm, kvm_restore_->uid, kvm_restore_->gid) != 0 ||
        chmod(kKvm, kvm_restore_->mode) != 0) {
      std::fprintf(stderr, "e2e: could not restore %s: %s\n", kKvm, strerror(errno));
    } else {
      unlink(kKvmRecord);
    }
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  if (lock_fd_ >= 0) {
    unlink(kLockFile);  // while still holding it; see Ensure
    close(lock_fd_);
  }
}

}  // namespace virtgate::e2e
