#include "tests/support/private_libvirtd.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/libvirt_direct.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"

namespace virtgate::testing {
namespace {

constexpr const char* kLibvirtd = "/usr/sbin/libvirtd";
constexpr const char* kVirsh = "/usr/bin/virsh";

}  // namespace

absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> PrivateLibvirtd::Start(bool running) {
  if (access(kLibvirtd, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kLibvirtd, " not found: install Debian's libvirt-daemon package to run this test"));
  }
  if (absl::Status s = EnsureEventLoop(); !s.ok()) return s;
  // A libvirt client in this process (an in-process server, the test's
  // own connections) writing to a daemon the test killed must get EPIPE,
  // not end the test binary: libvirt blocks SIGPIPE only around its own
  // calls, not in its event loop. (virtgated's main ignores it too.)
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<PrivateLibvirtd> d(new PrivateLibvirtd());
  char tmpl[] = "/tmp/virtgate-libvirtd-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  d->dir_ = tmpl;
  std::filesystem::create_directories(d->dir_ + "/sock");
  std::filesystem::create_directories(d->dir_ + "/drivers");
  std::ofstream conf(d->dir_ + "/libvirtd.conf");
  conf << "unix_sock_dir = \"" << d->dir_ << "/sock\"\n"
       << "auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n"
       << "listen_tcp = 0\nlisten_tls = 0\n"
       // Plenty of room for tests that open many connections or calls.
       << "max_clients = 5000\nmax_anonymous_clients = 5000\n"
       << "max_workers = 20\nmax_client_requests = 5\n";
  conf.close();
  d->uri_ = absl::StrCat("test+unix:///default?socket=", d->dir_, "/sock/libvirt-sock");
  if (!running) return d;
  if (absl::Status s = d->Spawn(); !s.ok()) return s;
  return d;
}

absl::Status PrivateLibvirtd::Spawn() {
  const std::string conf = dir_ + "/libvirtd.conf";
  const std::string pidfile = dir_ + "/libvirtd.pid";
  const std::string drivers = dir_ + "/drivers";
  const std::string log = dir_ + "/libvirtd.log";
  std::filesystem::remove(dir_ + "/sock/libvirt-sock");
  // SpawnChild makes only async-signal-safe calls between fork and exec.
  // (This used to fork and then call setenv: in a many-threaded test, the
  // likely cause of a libvirtd that "never created its socket", seen twice
  // under ASan.) The child shares none of the test's standard streams, or a
  // pipe reading the test's output never ends.
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log));
  ChildOptions o;
  o.argv = {kLibvirtd, "-f", conf, "--pid-file", pidfile};
  o.extra_env = {absl::StrCat("LIBVIRT_DRIVER_DIR=", drivers)};
  o.log_fd = log_fd;
  absl::StatusOr<pid_t> pid = SpawnChild(o);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  // Ready when a client can open the socket and talk to it.
  const bool up = WaitFor(
      [&] {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          return true;  // died: reported below
        }
        virConnectPtr c = virConnectOpen(uri_.c_str());
        if (c == nullptr) {
          virResetLastError();
          return false;
        }
        virConnectClose(c);
        return true;
      },
      absl::Seconds(30));
  if (!up || pid_ < 0) {
    std::string sockets;
    std::error_code ignored;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/sock", ignored)) {
      absl::StrAppend(&sockets, " ", e.path().filename().string());
    }
    return absl::InternalError(absl::StrCat("libvirtd did not come up (sockets:", sockets,
                                            "); see ", log));
  }
  return absl::OkStatus();
}

void PrivateLibvirtd::Kill() {
  if (pid_ <= 0) return;
  StopChild(pid_, absl::ZeroDuration());  // SIGKILL
  pid_ = -1;
}

absl::Status PrivateLibvirtd::Restart() {
  Kill();
  absl::Status s = Spawn();
  if (s.ok()) return s;
  // A libvirtd that never came up was seen in sanitizer runs (likely the
  // child deadlocked before exec; see Spawn). Should one not start, say
  // so, and start it once more.
  std::fprintf(stderr, "PrivateLibvirtd: restart failed (%s); starting it once more\n",
               std::string(s.message()).c_str());
  Kill();
  return Spawn();
}

std::string PrivateLibvirtd::Log() const { return ReadFile(dir_ + "/libvirtd.log"); }

CommandResult PrivateLibvirtd::Virsh(std::vector<std::string> args) const {
  args.insert(args.begin(), {kVirsh, "-q", "-c", uri_});
  return RunCommand(std::move(args));
}

std::string PrivateLibvirtd::WriteDomainXml(const std::string& name,
                                            const std::string& uuid) const {
  const std::string path = absl::StrCat(dir_, "/", name, ".xml");
  std::ofstream out(path);
  out << TestDomainXml(name, uuid) << "\n";
  return path;
}

void PrivateLibvirtd::Pause() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}

void PrivateLibvirtd::Resume() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

PrivateLibvirtd::~PrivateLibvirtd() {
  if (pid_ > 0) {
    StopChild(pid_, absl::Seconds(10));  // a graceful stop first; SIGKILL if it hangs
    pid_ = -1;
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::Status StartWithAdmin(std::unique_ptr<PrivateLibvirtd>* daemon, ConnectHandle* admin) {
  absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> d = PrivateLibvirtd::Start();
  if (!d.ok()) return d.status();
  *daemon = *std::move(d);
  *admin = (*daemon)->Connect();
  if (*admin == nullptr) {
    return absl::InternalError(absl::StrCat("cannot connect to ", (*daemon)->uri()));
  }
  return absl::OkStatus();
}

}  // namespace virtgate::testing
