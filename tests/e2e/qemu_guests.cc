#include "tests/e2e/qemu_guests.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/e2e/system_libvirtd.h"
#include "tests/support/files.h"
#include "tests/support/libvirt_direct.h"
#include "tests/support/wait_for.h"

namespace virtgate::e2e {
namespace {

using testing::EnsureEventLoop;
using testing::LastError;
using testing::ReadFile;
using testing::WaitFor;

// Best effort, for cleanup: SIGCONT (a test may have stopped it), destroy,
// undefine. Returns what went wrong, if anything.
std::string Remove(virDomainPtr dom) {
  std::string problems;
  const std::string name = DomainName(dom);
  if (virDomainIsActive(dom) == 1) {
    if (absl::StatusOr<pid_t> pid = GuestSet::QemuPid(name); pid.ok()) kill(*pid, SIGCONT);
    if (virDomainDestroy(dom) < 0) {
      absl::StrAppend(&problems, LastError("destroy " + name).message(), "; ");
    }
  }
  virResetLastError();
  if (virDomainIsPersistent(dom) == 1 && virDomainUndefine(dom) < 0) {
    absl::Status s = LastError("undefine " + name);
    if (!absl::IsNotFound(s)) absl::StrAppend(&problems, s.message(), "; ");
  }
  virResetLastError();
  return problems;
}

std::vector<DomainHandle> ListByPrefix(virConnectPtr conn, const std::string& prefix) {
  std::vector<DomainHandle> out;
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) {
    std::fprintf(stderr, "e2e: %s\n", LastError("list for cleanup").ToString().c_str());
    return out;
  }
  for (DomainHandle& d : AdoptDomainArray(doms, n)) {
    if (absl::StartsWith(DomainName(d.get()), prefix)) out.push_back(std::move(d));
  }
  return out;
}

// QEMU's log of each guest (written by virtlogd), which outlives the domain.
constexpr char kQemuLogDir[] = "/var/log/libvirt/qemu";

// Removes the QEMU logs of guests named `prefix`* whose owner pid is not alive
// (or, with !only_dead_owners, all of them).
void RemoveLogs(const std::string& prefix, bool only_dead_owners) {
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(kQemuLogDir, ignored)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, prefix)) continue;
    if (only_dead_owners) {
      absl::string_view rest = absl::StripPrefix(name, kGuestPrefix);
      int pid = 0;
      if (!absl::SimpleAtoi(rest.substr(0, rest.find('-')), &pid) || pid <= 0) continue;
      if (kill(pid, 0) == 0 || errno != ESRCH) continue;  // owner alive
    }
    std::filesystem::remove(entry.path(), ignored);
  }
}

}  // namespace

std::string TinyGuestXml(const std::string& name) {
  return absl::StrCat(
      "<domain type='qemu'><name>", name,
      "</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
      "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
      "<devices><emulator>", kQemuBinary, "</emulator></devices></domain>");
}

absl::StatusOr<std::unique_ptr<GuestSet>> GuestSet::Create(int connections) {
  if (absl::Status s = EnsureEventLoop(); !s.ok()) return s;
  std::unique_ptr<GuestSet> set(new GuestSet());
  set->prefix_ = absl::StrCat(kGuestPrefix, getpid(), "-");
  for (int i = 0; i < std::max(connections, 1); ++i) {
    ConnectHandle c(virConnectOpen(kSystemUri));
    if (!c) return LastError(absl::StrCat("open ", kSystemUri, " read-write"));
    set->conns_.push_back(std::move(c));
  }
  return set;
}

GuestSet::~GuestSet() {
  if (conns_.empty()) return;
  // In parallel, spread over the connections: a destroy waits for QEMU to
  // go away (here, until init reaps the daemonized QEMU: up to ~2 s).
  std::vector<std::string> names;
  for (DomainHandle& d : ListByPrefix(conns_[0].get(), prefix_)) names.push_back(DomainName(d.get()));
  std::vector<std::string> problems(names.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < names.size(); ++i) {
    threads.emplace_back([&, i] {
      DomainHandle d(virDomainLookupByName(conn(static_cast<int>(i)), names[i].c_str()));
      if (d) problems[i] = Remove(d.get());
      virResetLastError();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& p : problems) {
    if (!p.empty()) std::fprintf(stderr, "e2e cleanup: %s\n", p.c_str());
  }
  RemoveLogs(prefix_, /*only_dead_owners=*/false);
}

absl::StatusOr<std::string> GuestSet::Define(const std::string& tag) {
  const std::string name = prefix_ + tag;
  DomainHandle d(virDomainDefineXML(conn(), TinyGuestXml(name).c_str()));
  if (!d) return LastError("define " + name);
  return name;
}

absl::StatusOr<DomainHandle> GuestSet::Lookup(const std::string& name, int conn_index) const {
  DomainHandle d(virDomainLookupByName(conn(conn_index), name.c_str()));
  if (!d) return LastError("lookup " + name);
  return d;
}

absl::StatusOr<std::string> GuestSet::Uuid(const std::string& name) const {
  absl::StatusOr<DomainHandle> d = Lookup(name);
  if (!d.ok()) return d.status();
  return DomainUuid(d->get());
}

#define VGTE2E_DOMAIN_OP(Method, call, what)                                      \
  absl::Status GuestSet::Method(const std::string& name, int conn_index) {        \
    absl::StatusOr<DomainHandle> d = Lookup(name, conn_index);                    \
    if (!d.ok()) return d.status();                                               \
    virDomainPtr dom = d->get();                                                  \
    if ((call) < 0) return LastError(absl::StrCat(what, " ", name));              \
    return absl::OkStatus();                                                      \
  }
VGTE2E_DOMAIN_OP(Start, virDomainCreateWithFlags(dom, VIR_DOMAIN_START_AUTODESTROY), "start")
VGTE2E_DOMAIN_OP(Suspend, virDomainSuspend(dom), "suspend")
VGTE2E_DOMAIN_OP(Resume, virDomainResume(dom), "resume")
VGTE2E_DOMAIN_OP(Destroy, virDomainDestroy(dom), "destroy")
VGTE2E_DOMAIN_OP(Undefine, virDomainUndefine(dom), "undefine")
#undef VGTE2E_DOMAIN_OP

absl::StatusOr<pid_t> GuestSet::QemuPid(const std::string& name) {
  const std::string path = absl::StrCat("/run/libvirt/qemu/", name, ".pid");
  const std::string text = ReadFile(path);
  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) || pid <= 1) {
    return absl::NotFoundError(absl::StrCat("no QEMU pid in ", path, " (\"", text, "\")"));
  }
  return static_cast<pid_t>(pid);
}

std::string GuestSet::SweepLeftovers(virConnectPtr conn) {
  std::string removed;
  for (DomainHandle& d : ListByPrefix(conn, kGuestPrefix)) {
    const std::string name = DomainName(d.get());
    absl::string_view rest = absl::StripPrefix(name, kGuestPrefix);
    int pid = 0;
    if (!absl::SimpleAtoi(rest.substr(0, rest.find('-')), &pid) || pid <= 0) continue;
    if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue;  // owner alive
    const std::string problems = Remove(d.get());
    absl::StrAppend(&removed, name, problems.empty() ? "" : absl::StrCat(" (", problems, ")"),
                    " ");
  }
  RemoveLogs(kGuestPrefix, /*only_dead_owners=*/true);
  return removed;
}

ScopedSigstop::ScopedSigstop(pid_t pid) : pid_(pid) {
  if (kill(pid_, SIGSTOP) != 0) return;
  // Stopped once the kernel says so ("T" in /proc/<pid>/stat).
  const std::string stat_path = absl::StrCat("/proc/", pid_, "/stat");
  ok_ = WaitFor(
      [&] {
        const std::string stat = ReadFile(stat_path);
        const size_t paren = stat.rfind(')');
        return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T';
      },
      absl::Seconds(10));
}

ScopedSigstop::~ScopedSigstop() { kill(pid_, SIGCONT); }

}  // namespace virtgate::e2e
