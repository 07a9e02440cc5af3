#include "tests/support/private_libvirtd.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <fcntl.h>
#include <glob.h>
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
constexpr const char* kSaslPasswd = "/usr/sbin/saslpasswd2";

bool HasScramModule() {
  for (const char* pattern : {"/usr/lib/*/sasl2/libscram.so*", "/usr/lib/sasl2/libscram.so*"}) {
    glob_t found{};
    const bool any = glob(pattern, 0, nullptr, &found) == 0;
    globfree(&found);
    if (any) return true;
  }
  return false;
}

// Our own connections fail rather than prompt if the file lacks an answer.
int RefuseToPrompt(virConnectCredentialPtr, unsigned int ncred, void*) {
  return ncred == 0 ? 0 : -1;
}

// The daemon's SASL setup in `dir`/sasl (SASL_CONF_PATH): SCRAM-SHA-256
// only, one user in a sasldb; and an auth file for the test's own logins.
absl::Status SetUpSasl(const std::string& dir, const PrivateLibvirtd::SaslUser& user) {
  if (access(kSaslPasswd, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kSaslPasswd, " not found: install Debian's sasl2-bin package to run this test"));
  }
  if (!HasScramModule()) {
    return absl::FailedPreconditionError(
        "no SASL SCRAM module (libscram.so): install Debian's libsasl2-modules package to run "
        "this test");
  }
  std::filesystem::create_directories(dir + "/sasl");
  const std::string db = dir + "/sasl/passwd.db";
  std::ofstream(dir + "/sasl/libvirt.conf") << "mech_list: scram-sha-256\n"
                                            << "sasldb_path: " << db << "\n";
  // The password goes in on stdin (-p), never on a command line.
  CommandResult made = RunCommand(
      {"/bin/sh", "-c",
       "printf %s \"$VIRTGATE_SASL_PASSWORD\" | \"$0\" -p -a libvirt -f \"$1\" \"$2\"",
       kSaslPasswd, db, user.name},
      {absl::StrCat("VIRTGATE_SASL_PASSWORD=", user.password)});
  if (made.exit_code != 0) {
    return absl::InternalError(absl::StrCat("saslpasswd2 failed: ", made.Describe()));
  }
  const std::string auth = dir + "/own-auth.conf";
  std::ofstream(auth) << "[credentials-test]\nauthname=" << user.name
                      << "\npassword=" << user.password
                      << "\n\n[auth-libvirt-localhost]\ncredentials=test\n";
  chmod(auth.c_str(), 0600);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> PrivateLibvirtd::Start(Options options) {
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
  d->uri_ = absl::StrCat("test+unix:///default?socket=", d->dir_, "/sock/libvirt-sock");
  d->own_uri_ = d->uri_;
  if (options.sasl) {
    if (absl::Status s = SetUpSasl(d->dir_, *options.sasl); !s.ok()) return s;
    d->sasl_ = true;
    d->own_uri_ = absl::StrCat(d->uri_, "&authfile=", d->dir_, "/own-auth.conf");
  }
  const char* auth = options.sasl ? "sasl" : "none";
  std::ofstream conf(d->dir_ + "/libvirtd.conf");
  conf << "unix_sock_dir = \"" << d->dir_ << "/sock\"\n"
       << "auth_unix_rw = \"" << auth << "\"\nauth_unix_ro = \"" << auth << "\"\n"
       << "listen_tcp = 0\nlisten_tls = 0\n"
       // Plenty of room for tests that open many connections or calls.
       << "max_clients = 5000\nmax_anonymous_clients = 5000\n"
       << "max_workers = 20\nmax_client_requests = 5\n";
  conf.close();
  if (!options.running) return d;
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
  if (sasl_) o.extra_env.push_back(absl::StrCat("SASL_CONF_PATH=", dir_, "/sasl"));
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
        if (!Connect()) {
          virResetLastError();
          return false;
        }
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

ConnectHandle PrivateLibvirtd::Connect() const {
  if (!sasl_) return ConnectHandle(virConnectOpen(uri_.c_str()));
  int types[] = {VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE};
  virConnectAuth auth = {types, 2, &RefuseToPrompt, nullptr};
  return ConnectHandle(virConnectOpenAuth(own_uri_.c_str(), &auth, 0));
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
  args.insert(args.begin(), {kVirsh, "-q", "-c", own_uri_});
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
