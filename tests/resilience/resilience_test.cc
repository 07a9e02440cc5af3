// Resilience with real faults: virtgated runs as its own process, against a
// real libvirtd (test driver) on a private socket that the test kills with
// SIGKILL, stops with SIGSTOP, or starts only later; clients are plain gRPC
// stubs.
//
// Figures measured during the SIGSTOP test (health latency, how far a 1 s
// deadline is overshot) go to $VIRTGATE_BENCH_DIR/sigstop.json.
#include <dirent.h>
#include <libvirt/libvirt.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/libvirt/handles.h"
#include "tests/support/call_watchdog.h"
#include "tests/support/child_process.h"
#include "tests/support/client_view.h"
#include "tests/support/files.h"
#include "tests/support/percentile.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "tests/support/watch_collector.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using testing::ClientView;
using testing::Percentile;
using testing::PrivateLibvirtd;
using testing::ServerProcess;
using testing::TempDir;
using testing::WaitFor;
using testing::WatchCollector;

// Fast detection and reconnects, so 20 cycles take seconds.
const std::vector<std::string> kFastRecovery = {"--keepalive_interval=1", "--keepalive_count=3",
                                                "--reconnect_max_backoff=500ms"};

struct Timed {
  grpc::StatusCode code;
  absl::Duration took;
  std::string message;
};

class ResilienceTest : public ::testing::Test {
 protected:
  void StartDaemon(bool running) {
    absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> d = PrivateLibvirtd::Start(running);
    if (d.status().code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << d.status();
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }
  void StartServer(std::vector<std::string> flags, bool wait_serving = true) {
    ServerProcess::Config config;
    config.libvirt_uri = daemon_->uri();
    config.extra_flags = std::move(flags);
    config.wait_serving = wait_serving;
    // To keep virtgated's whole log (e.g. a sanitizer report) for debugging.
    if (const char* log = std::getenv("VIRTGATE_SERVER_LOG")) config.log_path = log;
    absl::StatusOr<std::unique_ptr<ServerProcess>> s = ServerProcess::Start(config);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    channel_ = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
    stub_ = v1::Hypervisor::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }
  void TearDown() override {
    if (daemon_) daemon_->Resume();  // never leave it stopped
  }

  // nullopt: the check itself failed (it must not). virtgate.v1.Hypervisor,
  // which follows libvirt ("" is virtgated itself, SERVING until shutdown).
  std::optional<bool> Serving(absl::Duration deadline, grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    HealthCheckRequest request;
    request.set_service("virtgate.v1.Hypervisor");
    HealthCheckResponse response;
    grpc::Status s = health_->Check(&ctx, request, &response);
    if (status != nullptr) *status = s;
    if (!s.ok()) return std::nullopt;
    return response.status() == HealthCheckResponse::SERVING;
  }
  bool WaitServing(bool serving) {
    return WaitFor([&] { return Serving(absl::Seconds(1)) == serving; }, absl::Seconds(30));
  }
  // The end of virtgated's log, for failure messages.
  std::string LogTail() {
    const std::string log = server_->Log();
    return log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  }
  Timed List(absl::Duration deadline, v1::ListDomainsResponse* out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    v1::ListDomainsRequest req;
    req.set_page_size(5000);
    v1::ListDomainsResponse response;
    const absl::Time start = absl::Now();
    grpc::Status s = stub_->ListDomains(&ctx, req, &response);
    if (out != nullptr) *out = response;
    return {s.error_code(), absl::Now() - start, s.error_message()};
  }
  // nullopt: the call failed (GetHostInfo answers from memory; it must not).
  std::optional<v1::HostInfo> HostInfo() {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::HostInfo info;
    if (!stub_->GetHostInfo(&ctx, {}, &info).ok()) return std::nullopt;
    return info;
  }
  // A CACHED listing (served from the cache alone, whatever libvirtd does).
  grpc::Status ListCached(v1::ListDomainsResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::ListDomainsRequest req;
    req.set_page_size(5000);
    req.set_consistency(v1::READ_CONSISTENCY_CACHED);
    return stub_->ListDomains(&ctx, req, out);
  }
  ConnectHandle Admin() {
    ConnectHandle c = daemon_->Connect();
    EXPECT_NE(c, nullptr);
    return c;
  }
  DomainHandle Define(virConnectPtr conn, const std::string& name) {
    DomainHandle d(virDomainDefineXML(conn, testing::TestDomainXml(name).c_str()));
    EXPECT_NE(d, nullptr) << name;
    return d;
  }
  // How many entries of /proc/<virtgated>/<dir> fall under each key.
  std::map<std::string, int> CountEntries(
      const std::string& subdir, const std::function<std::string(const std::string&)>& key) {
    std::map<std::string, int> counts;
    const std::string dir = absl::StrCat("/proc/", server_->pid(), "/", subdir);
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] != '.') ++counts[key(absl::StrCat(dir, "/", e->d_name))];
      }
      closedir(d);
    }
    return counts;
  }
  // Open descriptors by kind (socket, pipe, anon_inode:[eventfd], a file's
  // path): which kind a leak is narrows down who holds it.
  std::map<std::string, int> FdKinds() {
    return CountEntries("fd", [](const std::string& path) {
      char target[256];
      const ssize_t n = readlink(path.c_str(), target, sizeof target - 1);
      std::string kind = n > 0 ? std::string(target, n) : "?";
      if (size_t bracket = kind.find(":["); bracket != std::string::npos &&
                                            kind.compare(0, 11, "anon_inode:") != 0) {
        kind.resize(bracket);  // socket:[123] -> socket
      }
      return kind;
    });
  }
  // Threads by name.
  std::map<std::string, int> ThreadNames() {
    return CountEntries("task", [](const std::string& path) {
      std::ifstream comm(path + "/comm");
      std::string name;
      std::getline(comm, name);
      return name;
    });
  }
  // Threads virtgated started itself (they keep the program's name; gRPC
  // names its own pools, which grow with load up to a fixed bound and stay).
  int OwnThreads() { return ThreadNames()["virtgated"]; }
  // "key xN; ...", for failure messages.
  static std::string Describe(const std::map<std::string, int>& counts) {
    std::string out;
    for (const auto& [key, n] : counts) absl::StrAppend(&out, key, " x", n, "; ");
    return out;
  }

  std::unique_ptr<PrivateLibvirtd> daemon_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

bool IsEvent(const v1::WatchLifecycleResponse& m, const std::string& name,
             v1::LifecycleEventType type) {
  return m.has_event() && m.event().domain_name() == name && m.event().type() == type;
}

int CountConnection(const std::vector<v1::WatchLifecycleResponse>& ms,
                    v1::ConnectionChange::State state) {
  return static_cast<int>(std::count_if(ms.begin(), ms.end(), [&](const auto& m) {
    return m.has_connection() && m.connection().state() == state;
  }));
}

// 20 times: libvirtd is killed with SIGKILL and restarted on the same socket
// while 8 threads list and 10 watchers stream. The test driver's domains die
// with its daemon, so each restart is a set of changes made while virtgated
// was blind; watchers must be told, and end up with libvirt's state.
TEST_F(ResilienceTest, TwentyKillNineRestartsUnderLoadLoseNothing) {
  StartDaemon(true);
  std::vector<std::string> flags = kFastRecovery;
  flags.push_back("--log_level=debug");  // logs every failed open (see the fd check)
  StartServer(flags);
  // Warm up first (concurrent calls, a watch opened and closed): gRPC and
  // libvirt allocate some descriptors lazily, once, on first use.
  {
    std::vector<std::thread> warm;
    for (int i = 0; i < 8; ++i) warm.emplace_back([&] { List(absl::Seconds(5)); });
    for (auto& t : warm) t.join();
    WatchCollector w(stub_.get(), v1::WatchLifecycleRequest());
    ASSERT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  }
  const int base_threads = OwnThreads();
  const std::string base_names = Describe(ThreadNames());
  const std::map<std::string, int> base_fds = FdKinds();
  const size_t base_log_size = server_->Log().size();

  constexpr int kCycles = 20, kWatchers = 10, kCallers = 8;
  std::vector<std::unique_ptr<WatchCollector>> watchers;
  v1::WatchLifecycleRequest initial;
  initial.set_send_initial_state(true);
  for (int i = 0; i < kWatchers; ++i) {
    watchers.push_back(std::make_unique<WatchCollector>(stub_.get(), initial));
  }
  for (auto& w : watchers) {
    ASSERT_TRUE(w->WaitForMessage([](const auto& m) { return m.has_synced(); },
                                  absl::Seconds(30)));
  }

  std::atomic<bool> stop{false};
  absl::Mutex calls_mu;
  std::vector<Timed> calls;
  std::vector<std::thread> callers;
  // Stops and joins the callers however the test body ends (a failed
  // ASSERT returns early; a joinable std::thread would abort the binary).
  struct JoinCallers {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~JoinCallers() {
      stop = true;
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_callers{stop, callers};
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&] {
      while (!stop) {
        Timed t = List(absl::Seconds(5));
        absl::MutexLock lock(&calls_mu);
        calls.push_back(std::move(t));
      }
    });
  }

  for (int cycle = 0; cycle < kCycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle));
    {
      // Changes the watchers see live...
      ConnectHandle admin = Admin();
      const std::string a = absl::StrFormat("c%02d-a", cycle), b = absl::StrFormat("c%02d-b", cycle);
      if (cycle % 2 == 0) {
        DomainHandle test(virDomainLookupByName(admin.get(), "test"));
        ASSERT_EQ(virDomainDestroy(test.get()), 0);
      }
      DomainHandle da = Define(admin.get(), a);
      Define(admin.get(), b);
      ASSERT_EQ(virDomainCreate(da.get()), 0);  // the last change: seen, all were
      for (auto& w : watchers) {
        ASSERT_TRUE(w->WaitForMessage(
            [&](const auto& m) { return IsEvent(m, a, v1::LIFECYCLE_EVENT_TYPE_STARTED); },
            absl::Seconds(30)));
      }
    }
    // ... then the daemon dies, and comes back with only its default domain.
    daemon_->Kill();
    ASSERT_TRUE(WaitServing(false)) << "health must follow the daemon down\n" << LogTail();
    {
      // GetHostInfo says what health says; CACHED reads still answer, from
      // the cache, with every domain stale. (Waited for, not read once: a
      // connection whose open completed just before the kill counts as up
      // until libvirt reports it closed, and health follows it too.)
      std::optional<v1::HostInfo> info;
      EXPECT_TRUE(WaitFor(
          [&] {
            return (info = HostInfo()) && !info->connection().up() &&
                   !info->connection().events_up();
          },
          absl::Seconds(30)))
          << (info ? info->DebugString() : "GetHostInfo failed");
      ASSERT_TRUE(info.has_value());
      EXPECT_FALSE(info->connection().last_error().empty()) << info->DebugString();
      EXPECT_FALSE(info->connection().events_error().empty()) << info->DebugString();
      v1::ListDomainsResponse cached;
      grpc::Status s = ListCached(&cached);
      ASSERT_TRUE(s.ok()) << s.error_message();
      EXPECT_GT(cached.domains_size(), 0);
      for (const v1::Domain& d : cached.domains()) EXPECT_TRUE(d.stale()) << d.name();
    }
    ASSERT_TRUE(daemon_->Restart().ok());
    ASSERT_TRUE(WaitServing(true)) << "health must follow the daemon up\n" << LogTail();
    for (auto& w : watchers) {
      ASSERT_TRUE(WaitFor([&] {
        return CountConnection(w->Messages(), v1::ConnectionChange::STATE_RESTORED) > cycle;
      }, absl::Seconds(30))) << "no STATE_RESTORED\n" << LogTail();
      ASSERT_EQ(CountConnection(w->Messages(), v1::ConnectionChange::STATE_LOST), cycle + 1)
          << LogTail();
      const std::vector<v1::WatchLifecycleResponse> seen = w->Messages();
      auto lost = std::find_if(seen.rbegin(), seen.rend(), [](const auto& m) {
        return m.connection().state() == v1::ConnectionChange::STATE_LOST;
      });
      // Why: the socket closed; libvirt calls it "end of file", or "error"
      // when a keepalive ping was left unread in the dying daemon.
      EXPECT_TRUE(absl::StrContains(lost->connection().reason(), "connection closed ("))
          << "the LOST says why: " << lost->connection().reason();
      ASSERT_EQ(CountConnection(w->Messages(), v1::ConnectionChange::STATE_RESTORED), cycle + 1)
          << LogTail();
    }
  }
  stop = true;
  for (auto& t : callers) t.join();  // (JoinCallers would too; the checks below need them done)

  // A sentinel after everything: a watcher that has it has all before it.
  ConnectHandle admin = Admin();
  Define(admin.get(), "zz-sentinel");
  absl::StatusOr<std::map<std::string, testing::TruthEntry>> truth =
      testing::GroundTruth(admin.get());
  ASSERT_TRUE(truth.ok()) << truth.status();
  for (size_t i = 0; i < watchers.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("watcher ", i));
    ASSERT_TRUE(watchers[i]->WaitForMessage(
        [](const auto& m) { return IsEvent(m, "zz-sentinel", v1::LIFECYCLE_EVENT_TYPE_DEFINED); },
        absl::Seconds(30)));
    ClientView view;
    std::vector<std::string> problems;
    for (const auto& m : watchers[i]->Messages()) {
      if (std::string p = view.Apply(m); !p.empty()) problems.push_back(p);
    }
    EXPECT_TRUE(problems.empty()) << absl::StrJoin(problems, "\n");
    EXPECT_EQ(view.lost(), kCycles);
    EXPECT_EQ(view.restored(), kCycles);
    // Per cycle: STOPPED + UNDEFINED for c-a, UNDEFINED for c-b, and on
    // even cycles STARTED for the default domain that came back.
    EXPECT_EQ(view.synthetic(), kCycles * 3 + kCycles / 2);
    std::vector<std::string> diff = view.DiffFrom(*truth);
    EXPECT_TRUE(diff.empty()) << absl::StrJoin(diff, "\n");
  }

  int ok = 0;
  for (const Timed& t : calls) {
    EXPECT_TRUE(t.code == grpc::StatusCode::OK || t.code == grpc::StatusCode::UNAVAILABLE)
        << t.code << " " << t.message;
    EXPECT_LT(t.took, absl::Seconds(6)) << "a call outlived its 5 s deadline";
    ok += t.code == grpc::StatusCode::OK ? 1 : 0;
  }
  EXPECT_GT(ok, 0);
  EXPECT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);

  // Nothing leaks across reconnects: descriptors and threads come back.
  watchers.clear();
  // One exception, libvirt's: a virConnectOpen that libvirtd's death cuts
  // short mid-handshake leaks the eventfd of its client's GLib context
  // (libvirt 9.0; reproduced outside virtgated, ~1 in 5 such opens). So at
  // most one eventfd per open that failed after connecting (virtgated logs
  // every failed open at debug level), since the baseline, and never more
  // than kLibvirtLeaks, which does not depend on what virtgated logs: a
  // virtgated that fails more opens cannot hide more leaks. Measured here
  // over 23 runs of this test: 7 to 21 such opens per run, and 0 or 1
  // eventfd above the baseline; 1 leak per 4 restarts is 5 times the worst.
  constexpr int kLibvirtLeaks = kCycles / 4;
  auto failed_opens = [&] {
    const std::vector<std::string> lines =
        absl::StrSplit(server_->Log().substr(base_log_size), '\n');
    return static_cast<int>(std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
      return absl::StrContains(l, ": cannot open (") &&
             !absl::StrContains(l, "Failed to connect socket");  // no connection, no leak
    }));
  };
  auto fds_back = [&] {
    for (const auto& [kind, n] : FdKinds()) {
      auto base = base_fds.find(kind);
      const int allowed = (base == base_fds.end() ? 0 : base->second) +
                          (kind == "anon_inode:[eventfd]" ? std::min(failed_opens(), kLibvirtLeaks)
                                                          : 0);
      if (n > allowed) return false;
    }
    return true;
  };
  EXPECT_TRUE(WaitFor(fds_back, absl::Seconds(30)))
      << "open descriptors now: " << Describe(FdKinds())
      << "\nat the baseline: " << Describe(base_fds) << "\nfailed opens: " << failed_opens()
      << " (eventfds allowed for them: at most " << kLibvirtLeaks << ")"
      << "\n" << LogTail();

  {
    const auto base = base_fds.find("anon_inode:[eventfd]");
    std::cerr << "[kill test] opens failed after connecting: " << failed_opens()
              << "; eventfds above the baseline: "
              << FdKinds()["anon_inode:[eventfd]"] - (base == base_fds.end() ? 0 : base->second)
              << "\n";
  }
  EXPECT_TRUE(WaitFor([&] { return OwnThreads() <= base_threads; }, absl::Seconds(30)))
      << "threads " << OwnThreads() << " vs baseline " << base_threads << "\nnow:  "
      << Describe(ThreadNames()) << "\nthen: " << base_names;
}

// libvirtd stopped (SIGSTOP) for 10 s under load: health and GetHostInfo
// keep answering, listings end at their deadline, and the server serves
// again after SIGCONT without a restart.
TEST_F(ResilienceTest, SigstopTenSecondsUnderLoad) {
  StartDaemon(true);
  StartServer({});
  ASSERT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  const pid_t pid = server_->pid();
  WatchCollector watch(stub_.get(), v1::WatchLifecycleRequest());

  daemon_->Pause();
  const absl::Time until = absl::Now() + absl::Seconds(10);
  absl::Mutex mu;
  std::vector<double> health_ms;
  std::vector<std::string> health_failures;
  std::vector<Timed> lists;
  std::vector<std::string> host_failures;
  uint32_t max_stuck = 0;
  std::vector<std::thread> load;
  for (int i = 0; i < 4; ++i) {
    load.emplace_back([&] {
      while (absl::Now() < until) {
        Timed t = List(absl::Seconds(1));
        absl::MutexLock lock(&mu);
        lists.push_back(std::move(t));
      }
    });
  }
  load.emplace_back([&] {
    while (absl::Now() < until) {
      const absl::Time start = absl::Now();
      grpc::Status s;
      std::optional<bool> serving = Serving(absl::Milliseconds(500), &s);
      const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      absl::MutexLock lock(&mu);
      health_ms.push_back(ms);
      if (!serving.has_value()) health_failures.push_back(s.error_message());
      // Keepalive (5 s x 5 by default) cannot give up within 10 s: the
      // daemon is slow, not gone, and health must not say otherwise.
      if (serving == false) health_failures.push_back("NOT_SERVING during a 10 s stall");
      // Pacing (a prober's cadence), not synchronisation.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  load.emplace_back([&] {
    while (absl::Now() < until) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      v1::HostInfo info;
      grpc::Status s = stub_->GetHostInfo(&ctx, v1::GetHostInfoRequest(), &info);
      absl::MutexLock lock(&mu);
      if (!s.ok()) host_failures.push_back(s.error_message());
      else if (info.hostname().empty()) host_failures.push_back("no host facts");
      else if (!info.connection().up() || !info.connection().events_up())
        host_failures.push_back("connections reported down during a 10 s stall");
      max_stuck = std::max(max_stuck, info.connection().stuck_calls());
    }
  });
  for (auto& t : load) t.join();
  daemon_->Resume();

  EXPECT_TRUE(health_failures.empty()) << absl::StrJoin(health_failures, "\n");
  EXPECT_TRUE(host_failures.empty()) << absl::StrJoin(host_failures, "\n");
  EXPECT_GT(max_stuck, 0u) << "GetHostInfo reports calls stuck in the stopped libvirtd";
  std::vector<double> overshoot_ms;
  // Keepalive did not give up, so no call saw the connection go: each one
  // ended at its deadline.
  for (const Timed& t : lists) {
    EXPECT_EQ(t.code, grpc::StatusCode::DEADLINE_EXCEEDED) << t.message;
    EXPECT_LT(t.took, absl::Milliseconds(1500));
    overshoot_ms.push_back(absl::ToDoubleMilliseconds(t.took - absl::Seconds(1)));
  }
  ASSERT_FALSE(lists.empty());

  EXPECT_EQ(CountConnection(watch.Messages(), v1::ConnectionChange::STATE_LOST), 0)
      << "events were never lost, only late";

  // Serves again, same process: no stuck call left, events live.
  EXPECT_TRUE(WaitFor([&] { return List(absl::Seconds(5)).code == grpc::StatusCode::OK; },
                      absl::Seconds(30)));
  EXPECT_EQ(server_->pid(), pid);
  EXPECT_EQ(kill(pid, 0), 0) << "virtgated still running";
  EXPECT_EQ(Serving(absl::Seconds(1)), true);
  EXPECT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::HostInfo info;
        return stub_->GetHostInfo(&ctx, {}, &info).ok() && info.connection().stuck_calls() == 0;
      },
      absl::Seconds(30)))
      << "stuck calls returned after SIGCONT";
  ConnectHandle admin = Admin();
  DomainHandle after = Define(admin.get(), "after-sigcont");
  EXPECT_TRUE(watch.WaitForMessage(
      [](const auto& m) { return IsEvent(m, "after-sigcont", v1::LIFECYCLE_EVENT_TYPE_DEFINED); },
      absl::Seconds(30)));

  if (const char* dir = std::getenv("VIRTGATE_BENCH_DIR")) {
    std::ofstream out(absl::StrCat(dir, "/sigstop.json"));
    out << absl::StrFormat(
        "{\"health_checks\": %d, \"health_p50_ms\": %.2f, \"health_p99_ms\": %.2f, "
        "\"health_max_ms\": %.2f, \"list_calls\": %d, \"list_overshoot_p50_ms\": %.2f, "
        "\"list_overshoot_p99_ms\": %.2f, \"list_overshoot_max_ms\": %.2f, "
        "\"max_stuck_calls\": %u}\n",
        static_cast<int>(health_ms.size()), Percentile(health_ms, 0.5),
        Percentile(health_ms, 0.99), Percentile(health_ms, 1.0), static_cast<int>(lists.size()),
        Percentile(overshoot_ms, 0.5), Percentile(overshoot_ms, 0.99),
        Percentile(overshoot_ms, 1.0), max_stuck);
  }
}

// libvirtd stopped, with keepalive short enough to give up during the
// stall, with calls in flight (libvirt's client then runs a connection's
// keepalive on the calling thread) and without: health, GetHostInfo and
// watches tell one story, before SIGCONT; and all come back after it.
class StallReportTest : public ResilienceTest,
                        public ::testing::WithParamInterface<bool> {};

TEST_P(StallReportTest, HealthHostInfoAndWatchesAgreeWhenKeepaliveGivesUp) {
  const bool calls_in_flight = GetParam();
  StartDaemon(true);
  StartServer({"--keepalive_interval=1", "--keepalive_count=2", "--reconnect_max_backoff=500ms"});
  ASSERT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  WatchCollector watch(stub_.get(), v1::WatchLifecycleRequest());
  ASSERT_TRUE(WaitFor([&] { return Serving(absl::Seconds(1)) == true; }, absl::Seconds(10)));

  daemon_->Pause();
  std::atomic<bool> stop{false};
  std::vector<std::thread> callers;
  if (calls_in_flight) {
    for (int i = 0; i < 2; ++i) {
      callers.emplace_back([&] {
        while (!stop) List(absl::Seconds(1));
      });
    }
  }
  auto host = [&] {
    grpc::ClientContext ctx;
    v1::HostInfo info;
    EXPECT_TRUE(stub_->GetHostInfo(&ctx, {}, &info).ok());
    return info;
  };
  // Keepalive gives up after 1 s x 2 unanswered pings: everything says so.
  const bool down = WaitFor([&] { return Serving(absl::Seconds(1)) == false; },
                            absl::Seconds(20));
  const v1::HostInfo info = host();
  const bool lost = watch.WaitForMessage(
      [](const auto& m) {
        return m.has_connection() && m.connection().state() == v1::ConnectionChange::STATE_LOST;
      },
      absl::Seconds(20));
  const v1::HostInfo later = host();
  stop = true;
  for (auto& t : callers) t.join();
  daemon_->Resume();
  EXPECT_TRUE(down) << "health still SERVING with libvirtd stopped\n" << LogTail();
  EXPECT_FALSE(info.connection().up()) << "health said NOT_SERVING, GetHostInfo up";
  EXPECT_EQ(info.connection().connections_up(), 0u);
  EXPECT_TRUE(lost) << "no STATE_LOST before SIGCONT\n" << LogTail();
  EXPECT_FALSE(later.connection().events_up());
  EXPECT_NE(later.connection().events_error(), "");

  ASSERT_TRUE(WaitServing(true));
  EXPECT_TRUE(watch.WaitForMessage(
      [](const auto& m) {
        return m.has_connection() &&
               m.connection().state() == v1::ConnectionChange::STATE_RESTORED;
      },
      absl::Seconds(30)));
  EXPECT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  EXPECT_TRUE(WaitFor([&] { return host().connection().events_up(); }, absl::Seconds(30)));
}

INSTANTIATE_TEST_SUITE_P(InFlightOrIdle, StallReportTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "WithCallsInFlight" : "Idle";
                         });

// A call stuck in a stopped libvirtd ends at the server's limit, not the
// client's: the clients here set no deadline, or one a minute away, so only
// virtgated can have ended them. The worker is abandoned (GetHostInfo counts
// it stuck past its deadline), not the RPC; all is well after SIGCONT.
TEST_F(ResilienceTest, CallStuckInLibvirtEndsAtTheServersLimit) {
  StartDaemon(true);
  StartServer({"--max_call_time=1s"});
  ASSERT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  daemon_->Pause();
  for (const bool client_deadline : {false, true}) {
    SCOPED_TRACE(client_deadline ? "client deadline 60 s" : "no client deadline");
    grpc::ClientContext ctx;
    if (client_deadline) ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    v1::ListDomainsResponse response;
    grpc::Status s;
    {
      testing::CallWatchdog watchdog(&ctx, absl::Seconds(30));
      s = stub_->ListDomains(&ctx, v1::ListDomainsRequest(), &response);
    }
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "--max_call_time")) << s.error_message();
  }
  std::optional<v1::HostInfo> info = HostInfo();
  ASSERT_TRUE(info.has_value());
  EXPECT_GE(info->connection().stuck_calls(), 1u)
      << "the libvirt call outlives its RPC: " << info->DebugString();
  daemon_->Resume();
  EXPECT_TRUE(WaitFor([&] { return (info = HostInfo()) && info->connection().stuck_calls() == 0; },
                      absl::Seconds(30)))
      << info->DebugString();
  EXPECT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
}

// More concurrent calls than workers + queue while libvirtd cannot answer:
// exactly the excess is refused, and refused while the others still wait.
TEST_F(ResilienceTest, SaturatedPoolRefusesExactlyTheExcess) {
  StartDaemon(true);
  StartServer({"--workers=2", "--max_queued_calls=2"});
  daemon_->Pause();
  constexpr int kCalls = 10;
  struct Call {
    grpc::ClientContext ctx;
    v1::ListDomainsResponse response;
    grpc::Status status;
    bool done = false;
  };
  std::vector<Call> calls(kCalls);
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ListDomainsResponse>>> rpcs;
  for (int i = 0; i < kCalls; ++i) {
    calls[i].ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    rpcs.push_back(stub_->AsyncListDomains(&calls[i].ctx, v1::ListDomainsRequest(), &cq));
    rpcs.back()->Finish(&calls[i].response, &calls[i].status, &calls[i]);
  }
  // While libvirtd is stopped nothing can succeed, so whatever finishes now
  // was refused; exactly workers + queue calls were taken.
  int refused = 0;
  for (int i = 0; i < kCalls - 4; ++i) {
    void* tag;
    bool ok;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    auto* c = static_cast<Call*>(tag);
    c->done = true;
    EXPECT_EQ(c->status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << c->status.error_message();
    refused += c->status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  EXPECT_EQ(refused, kCalls - 4);
  // Health and GetHostInfo answer from memory, not from the full queue: a
  // saturated pool is busy, not down.
  grpc::Status health_status;
  EXPECT_EQ(Serving(absl::Seconds(1), &health_status), true) << health_status.error_message();
  std::optional<v1::HostInfo> info = HostInfo();
  ASSERT_TRUE(info.has_value()) << "GetHostInfo must answer while the workers are all taken";
  EXPECT_TRUE(info->connection().up()) << info->DebugString();
  // Both workers reach libvirt (and stay there): waited for, since taking a
  // task off the queue comes a moment before holding a connection.
  EXPECT_TRUE(WaitFor([&] { return (info = HostInfo()) && info->connection().calls_in_flight() == 2; },
                      absl::Seconds(10)))
      << (info ? info->DebugString() : "GetHostInfo failed");
  daemon_->Resume();
  for (int i = 0; i < 4; ++i) {
    void* tag;
    bool ok;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    auto* c = static_cast<Call*>(tag);
    EXPECT_TRUE(c->status.ok()) << c->status.error_message();
    EXPECT_FALSE(c->done);
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

// SIGTERM drains: whoever watches health (gRPC's client-side health
// checking, proxies) is told NOT_SERVING at once, while a call already in
// flight (waiting on a stopped libvirtd) still succeeds within
// --shutdown_grace; then virtgated exits 0.
TEST_F(ResilienceTest, SigtermSaysNotServingAtOnceAndLetsInFlightCallsFinish) {
  StartDaemon(true);
  StartServer({"--shutdown_grace=60s"});
  ASSERT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  grpc::ClientContext health_ctx;
  health_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> health =
      health_->Watch(&health_ctx, HealthCheckRequest());
  HealthCheckResponse update;
  ASSERT_TRUE(health->Read(&update));
  ASSERT_EQ(update.status(), HealthCheckResponse::SERVING);

  daemon_->Pause();
  std::atomic<bool> call_done{false};
  Timed in_flight;
  std::thread caller([&] {
    in_flight = List(absl::Seconds(60));
    call_done = true;
  });
  struct Join {
    std::thread& t;
    PrivateLibvirtd* d;
    ~Join() {
      d->Resume();
      if (t.joinable()) t.join();
    }
  } join{caller, daemon_.get()};
  ASSERT_TRUE(WaitFor([&] {
    std::optional<v1::HostInfo> info = HostInfo();
    return info && info->connection().calls_in_flight() == 1;
  }, absl::Seconds(10)));

  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
  ASSERT_TRUE(health->Read(&update)) << "the health watch ended without saying NOT_SERVING";
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(call_done) << "the call in flight must not be cut off";
  // The health watch stays open, as a real client's would: it must not hold
  // shutdown for the whole 60 s grace (Terminate below waits 30 s).

  daemon_->Resume();
  caller.join();
  EXPECT_EQ(in_flight.code, grpc::StatusCode::OK) << in_flight.message;
  absl::StatusOr<int> status = server_->Terminate(absl::Seconds(30));
  ASSERT_TRUE(status.ok()) << status.status() << "\n" << LogTail();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << testing::DescribeWaitStatus(*status);
}

// SIGTERM while libvirtd is stopped, with watches open and calls stuck in
// it: virtgated still exits 0 within its grace period and says what it
// abandoned.
TEST_F(ResilienceTest, SigtermWithLibvirtdStoppedExitsWithinGrace) {
  StartDaemon(true);
  StartServer({"--shutdown_grace=2s"});
  std::vector<std::unique_ptr<WatchCollector>> watchers;
  for (int i = 0; i < 3; ++i) {
    watchers.push_back(std::make_unique<WatchCollector>(stub_.get(), v1::WatchLifecycleRequest()));
  }
  ASSERT_EQ(List(absl::Seconds(5)).code, grpc::StatusCode::OK);
  daemon_->Pause();
  std::vector<std::thread> stuck;
  std::atomic<int> ended{0};
  for (int i = 0; i < 3; ++i) {
    stuck.emplace_back([&] {
      List(absl::Seconds(60));  // stuck in the stopped libvirtd
      ++ended;
    });
  }
  // All three are inside libvirt (holding a connection) before SIGTERM.
  ASSERT_TRUE(WaitFor([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    v1::HostInfo info;
    return stub_->GetHostInfo(&ctx, {}, &info).ok() && info.connection().calls_in_flight() == 3;
  }, absl::Seconds(10)));
  const absl::Time start = absl::Now();
  absl::StatusOr<int> status = server_->Terminate(absl::Seconds(10));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << testing::DescribeWaitStatus(*status);
  EXPECT_LT(took, absl::Seconds(4)) << "grace is 2 s";
  for (auto& w : watchers) {
    std::optional<grpc::Status> end = w->WaitForEnd(absl::Seconds(10));
    ASSERT_TRUE(end.has_value());
    EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE) << end->error_message();
  }
  for (auto& t : stuck) t.join();
  EXPECT_EQ(ended, 3);
  const std::string log = server_->Log();
  EXPECT_TRUE(absl::StrContains(log, "abandon")) << log;
}

// No libvirtd at start-up: virtgated starts anyway, says NOT_SERVING and
// why, and serves once libvirtd appears; a watch opened meanwhile is told.
TEST_F(ResilienceTest, StartsWithoutLibvirtdAndServesWhenItAppears) {
  StartDaemon(/*running=*/false);
  // Health alone on a port of its own too (--health_listen): it follows
  // libvirtd like the API port's, up and down.
  TempDir health_dir("virtgate-health");
  ASSERT_FALSE(health_dir.path().empty());
  const std::string health_target = absl::StrCat("unix:", health_dir.path(), "/health.sock");
  std::vector<std::string> flags = kFastRecovery;
  flags.push_back(absl::StrCat("--health_listen=", health_target));
  StartServer(flags, /*wait_serving=*/false);
  auto health_port = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(health_target, grpc::InsecureChannelCredentials()));
  auto health_port_says = [&](const std::string& service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    const grpc::Status s = health_port->Check(&ctx, request, &response);
    return s.ok() ? HealthCheckResponse::ServingStatus_Name(response.status()) : s.error_message();
  };
  EXPECT_EQ(Serving(absl::Seconds(5)), false);
  EXPECT_EQ(health_port_says("virtgate.v1.Hypervisor"), "NOT_SERVING");
  // virtgated itself is up: a liveness probe must not restart it.
  EXPECT_EQ(health_port_says(""), "SERVING");
  EXPECT_EQ(health_port_says("virtgate.v1.Hypervisor/WatchLifecycle"), "NOT_SERVING");
  Timed t = List(absl::Seconds(5));
  EXPECT_EQ(t.code, grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StrContains(t.message, "hypervisor unavailable")) << t.message;
  {
    grpc::ClientContext ctx;
    v1::HostInfo info;
    ASSERT_TRUE(stub_->GetHostInfo(&ctx, {}, &info).ok());
    EXPECT_FALSE(info.connection().up());
    EXPECT_FALSE(info.connection().events_up());
    EXPECT_FALSE(info.connection().last_error().empty());
  }
  WatchCollector watch(stub_.get(), v1::WatchLifecycleRequest());
  ASSERT_TRUE(watch.WaitForCount(1, absl::Seconds(10)));
  EXPECT_EQ(testing::Describe(watch.Messages()[0]).rfind("connection STATE_LOST", 0), 0u)
      << testing::Describe(watch.Messages()[0]);

  ASSERT_TRUE(daemon_->Restart().ok());
  ASSERT_TRUE(WaitServing(true));
  EXPECT_TRUE(WaitFor([&] { return health_port_says("virtgate.v1.Hypervisor") == "SERVING"; },
                      absl::Seconds(10)));
  ASSERT_TRUE(watch.WaitForMessage(
      [](const auto& m) { return IsEvent(m, "test", v1::LIFECYCLE_EVENT_TYPE_STARTED); },
      absl::Seconds(30)));
  std::vector<std::string> seen;
  for (const auto& m : watch.Messages()) seen.push_back(testing::Describe(m));
  // What it missed: the default domain, defined and running.
  EXPECT_EQ(absl::StrJoin(seen, "\n"),
            absl::StrJoin({std::string(seen[0]), std::string("connection STATE_RESTORED ()"),
                           std::string("test LIFECYCLE_EVENT_TYPE_DEFINED/added (synthetic)"),
                           std::string("test LIFECYCLE_EVENT_TYPE_STARTED/unknown (synthetic)")},
                          "\n"));
  v1::ListDomainsResponse listed;
  ASSERT_EQ(List(absl::Seconds(5), &listed).code, grpc::StatusCode::OK);
  ASSERT_EQ(listed.domains_size(), 1);
  EXPECT_EQ(listed.domains(0).name(), "test");
  // One story once it is all back: host fields, events up, no stale error.
  EXPECT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        v1::HostInfo info;
        if (!stub_->GetHostInfo(&ctx, {}, &info).ok()) return false;
        const v1::ConnectionInfo& c = info.connection();
        return !info.hostname().empty() && c.events_up() && c.events_error().empty() &&
               c.connections_up() == c.connections_total() && c.last_error().empty();
      },
      absl::Seconds(30)));
  EXPECT_EQ(health_port_says("virtgate.v1.Hypervisor/WatchLifecycle"), "SERVING");

  // And down again with libvirtd.
  daemon_->Kill();
  EXPECT_TRUE(WaitFor([&] { return health_port_says("virtgate.v1.Hypervisor") == "NOT_SERVING"; },
                      absl::Seconds(10)));
  EXPECT_EQ(Serving(absl::Seconds(2)), false);
  EXPECT_EQ(health_port_says(""), "SERVING");
}

}  // namespace
}  // namespace virtgate
