// Abusive clients against the real virtgated (a child process) and a
// private libvirtd whose domains the test churns: one client opens more
// watches than it may and never reads any of them, and holds TCP
// connections that never send a byte. Its extra watches are refused with
// RESOURCE_EXHAUSTED naming the flag; another client (another source
// address) is served meanwhile; virtgated's threads and memory stay
// bounded; and once the abuser is gone, every watch it held is freed.
//
// The figures (threads, RSS) go to stdout and to
// $VIRTGATE_BENCH_DIR/abuse.json.
#include <arpa/inet.h>
#include <libvirt/libvirt.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/libvirt/handles.h"
#include "tests/support/files.h"
#include "tests/support/loopback.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using testing::DeadlineIn;
using testing::HasIpv6Loopback;
using testing::PrivateLibvirtd;
using testing::ServerProcess;
using testing::TempDir;
using testing::WaitFor;

constexpr int kPerPeer = 200;     // --max_watches_per_peer
constexpr int kAbuserWatches = 250;
constexpr int kAbuserConnections = 5;  // 50 watches each
constexpr int kSilentSockets = 50;     // TCP connections that never send a byte
constexpr int kChurnDomains = 1000;    // defined and undefined: 2,000 events

// A free TCP port on every address (IPv4 and IPv6).
int FreePort() {
  const int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  int off = 0;
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_any;
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin6_port);
  }
  close(fd);
  return port;
}

// A TCP connection to 127.0.0.1:port that sends nothing.
int SilentConnection(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Threads and resident memory of a process, from /proc/PID/status.
struct Usage {
  int threads = 0;
  int64_t rss_kib = 0;
};

Usage UsageOf(pid_t pid) {
  Usage u;
  for (absl::string_view line :
       absl::StrSplit(testing::ReadFile(absl::StrCat("/proc/", pid, "/status")), '\n')) {
    absl::string_view value = line;
    if (absl::ConsumePrefix(&value, "Threads:")) {
      (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(value), &u.threads);
    } else if (absl::ConsumePrefix(&value, "VmRSS:")) {
      (void)absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(value), " kB"),
                             &u.rss_kib);
    }
  }
  return u;
}

// A watch whose client never reads a message: it only learns how the call
// ended (at once, if refused; when cancelled, otherwise).
class NeverReadingWatch final : public grpc::ClientReadReactor<v1::WatchLifecycleResponse> {
 public:
  struct Outcomes {
    absl::Mutex mu;
    int done = 0;
    int refused_per_peer = 0;  // RESOURCE_EXHAUSTED naming --max_watches_per_peer
    std::vector<std::string> other;  // any other ending before the test cancelled
    bool cancelling = false;
  };

  NeverReadingWatch(v1::Hypervisor::Stub* stub, Outcomes* outcomes) : outcomes_(outcomes) {
    stub->async()->WatchLifecycle(&ctx_, &request_, this);
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }
  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&outcomes_->mu);
    ++outcomes_->done;
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
        absl::StrContains(s.error_message(), "(--max_watches_per_peer)")) {
      ++outcomes_->refused_per_peer;
    } else if (!outcomes_->cancelling) {
      outcomes_->other.push_back(absl::StrCat(s.error_code(), ": ", s.error_message()));
    }
  }

 private:
  grpc::ClientContext ctx_;
  v1::WatchLifecycleRequest request_;  // every domain, every event, live
  Outcomes* const outcomes_;
};

// The abusive client, on 127.0.0.1: more watches than it may hold, over a
// few connections of its own, none of them ever read; and TCP connections
// that never send a byte. Everything is cancelled and closed on destruction.
class Abuser {
 public:
  Abuser(const std::string& target, int port) {
    for (int c = 0; c < kAbuserConnections; ++c) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
      stubs_.push_back(v1::Hypervisor::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
    }
    for (int i = 0; i < kAbuserWatches; ++i) {
      watches_.push_back(std::make_unique<NeverReadingWatch>(
          stubs_[i % kAbuserConnections].get(), outcomes_.get()));
    }
    for (int i = 0; i < kSilentSockets; ++i) silent_.push_back(SilentConnection(port));
  }
  ~Abuser() {
    if (!Leave()) {
      // A watch that has not ended may still call OnDone: leak what it uses.
      for (auto& w : watches_) (void)w.release();
      (void)outcomes_.release();
    }
    for (int fd : silent_) {
      if (fd >= 0) close(fd);
    }
  }

  // Waits until `n` watches have ended (been refused, before Leave()).
  bool WaitEnded(int n) {
    return WaitFor(
        [&] {
          absl::MutexLock lock(&outcomes_->mu);
          return outcomes_->done >= n;
        },
        absl::Seconds(60));
  }
  int refused_per_peer() {
    absl::MutexLock lock(&outcomes_->mu);
    return outcomes_->refused_per_peer;
  }
  // Endings other than the refusal, before Leave().
  std::vector<std::string> other_endings() {
    absl::MutexLock lock(&outcomes_->mu);
    return outcomes_->other;
  }
  // Cancels every watch and waits until each has ended; true if they all
  // did in time.
  bool Leave() {
    if (watches_.empty()) return true;
    {
      absl::MutexLock lock(&outcomes_->mu);
      outcomes_->cancelling = true;
    }
    for (auto& w : watches_) w->Cancel();
    if (!WaitEnded(kAbuserWatches)) return false;
    watches_.clear();
    stubs_.clear();
    return true;
  }

 private:
  std::unique_ptr<NeverReadingWatch::Outcomes> outcomes_ =
      std::make_unique<NeverReadingWatch::Outcomes>();
  std::vector<std::unique_ptr<v1::Hypervisor::Stub>> stubs_;
  std::vector<std::unique_ptr<NeverReadingWatch>> watches_;
  std::vector<int> silent_;
};

class AbuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HasIpv6Loopback()) GTEST_SKIP() << "needs the IPv6 loopback [::1] for a second client";
    absl::Status started = testing::StartWithAdmin(&daemon_, &admin_);
    if (started.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << started;
    ASSERT_TRUE(started.ok()) << started;
    port_ = FreePort();
    ASSERT_GT(port_, 0);
    ServerProcess::Config config;
    config.libvirt_uri = daemon_->uri();
    // Dialled (and health-checked) on 127.0.0.1; listening on every address
    // (the later --listen wins), so [::1] is another client.
    config.target = absl::StrCat("127.0.0.1:", port_);
    config.log_path = absl::StrCat(dir_.path(), "/virtgated.log");
    config.extra_flags = {absl::StrCat("--listen=[::]:", port_), "--insecure",
                          absl::StrCat("--max_watches_per_peer=", kPerPeer)};
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    other_ = v1::Hypervisor::NewStub(
        grpc::CreateChannel(absl::StrCat("[::1]:", port_), grpc::InsecureChannelCredentials()));
  }

  std::optional<v1::HostInfo> HostInfo() {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(absl::Seconds(10)));
    v1::HostInfo info;
    if (!other_->GetHostInfo(&ctx, {}, &info).ok()) return std::nullopt;
    return info;
  }
  // The other client lists (FRESH: through libvirt) and opens a watch that
  // gets its snapshot and `synced`.
  void OtherClientIsServed() {
    grpc::ClientContext list_ctx;
    list_ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::ListDomainsResponse listed;
    grpc::Status s = other_->ListDomains(&list_ctx, {}, &listed);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_GT(listed.domains_size(), 0);
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(absl::Seconds(30)));
    v1::WatchLifecycleRequest req;
    req.set_send_initial_state(true);
    auto reader = other_->WatchLifecycle(&ctx, req);
    v1::WatchLifecycleResponse m;
    bool synced = false;
    while (!synced && reader->Read(&m)) synced = m.has_synced();
    EXPECT_TRUE(synced) << "the other client's watch was not served";
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    reader->Finish();
  }

  // Defines and undefines kChurnDomains domains (two events each) and waits
  // until virtgated has published them all.
  void Churn(uint64_t from_sequence) {
    for (int i = 0; i < kChurnDomains; ++i) {
      DomainHandle d(virDomainDefineXML(
          admin_.get(), testing::TestDomainXml(absl::StrFormat("churn-%05d", i)).c_str()));
      ASSERT_NE(d, nullptr);
      ASSERT_EQ(virDomainUndefine(d.get()), 0);
    }
    std::optional<v1::HostInfo> info;
    EXPECT_TRUE(WaitFor(
        [&] {
          return (info = HostInfo()) &&
                 info->connection().last_sequence() >= from_sequence + 2 * kChurnDomains;
        },
        absl::Seconds(60)));
  }
  // Waits until virtgated reports `n` open watches.
  void WaitOpenWatches(uint32_t n) {
    std::optional<v1::HostInfo> info;
    EXPECT_TRUE(
        WaitFor([&] { return (info = HostInfo()) && info->connection().open_watches() == n; },
                absl::Seconds(60)))
        << "want " << n << " open watches; " << (info ? info->DebugString() : "no GetHostInfo");
  }

  TempDir dir_{"virtgate-abuse"};
  std::unique_ptr<PrivateLibvirtd> daemon_;
  ConnectHandle admin_;
  int port_ = 0;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::Hypervisor::Stub> other_;  // the well-behaved client, on [::1]
};

TEST_F(AbuseTest, NeverReadingWatchesAndSilentConnectionsCostBoundedResources) {
  OtherClientIsServed();  // warms up gRPC's and virtgated's threads
  WaitOpenWatches(0);     // its watch is gone once the server has seen the cancel
  const Usage base = UsageOf(server_->pid());
  std::optional<v1::HostInfo> info = HostInfo();
  ASSERT_TRUE(info.has_value());

  auto abuser = std::make_unique<Abuser>(server_->target(), port_);
  EXPECT_TRUE(abuser->WaitEnded(kAbuserWatches - kPerPeer));
  WaitOpenWatches(kPerPeer);
  EXPECT_EQ(abuser->refused_per_peer(), kAbuserWatches - kPerPeer);
  EXPECT_EQ(abuser->other_endings(), std::vector<std::string>());

  // Events for everyone: the abuser's queues fill (and overflow) while its
  // streams sit on HTTP/2 flow control.
  Churn(info->connection().last_sequence());
  OtherClientIsServed();
  const Usage abused = UsageOf(server_->pid());
  std::cout << "virtgated with " << kPerPeer << " never-reading watches (" << kAbuserWatches
            << " asked), " << kSilentSockets << " silent connections, "
            << 2 * kChurnDomains << " events: threads " << base.threads << " -> "
            << abused.threads << ", RSS " << base.rss_kib << " -> " << abused.rss_kib
            << " KiB\n";
  // gRPC's callback threads are a pool of fixed bound, and nothing of ours
  // is per watch or per connection.
  EXPECT_LE(abused.threads, base.threads + 8);
  // What the watches hold: each at most --watch_queue_depth (1,024) shared
  // messages queued, one in flight, and its HTTP/2 stream.
  // Under AddressSanitizer, freed memory sits in its quarantine (up to
  // 256 MB) and every allocation carries redzones: RSS says nothing there,
  // and the plain build checks it.
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_LE(abused.rss_kib, base.rss_kib + 64 * 1024);
#endif

  // The abuser goes away: every watch it held is freed.
  EXPECT_TRUE(abuser->Leave());
  abuser.reset();
  WaitOpenWatches(0);
  const Usage after = UsageOf(server_->pid());
  EXPECT_LE(after.threads, base.threads + 8);
  std::cout << "after the abuser left: threads " << after.threads << ", RSS " << after.rss_kib
            << " KiB\n";
  if (const char* dir = std::getenv("VIRTGATE_BENCH_DIR")) {
    std::ofstream(absl::StrCat(dir, "/abuse.json"))
        << absl::StrFormat(
               "{\"never_reading_watches\": %d, \"silent_connections\": %d, \"events\": %d, "
               "\"threads_before\": %d, \"threads_during\": %d, \"threads_after\": %d, "
               "\"rss_kib_before\": %d, \"rss_kib_during\": %d, \"rss_kib_after\": %d}\n",
               kPerPeer, kSilentSockets, 2 * kChurnDomains, base.threads, abused.threads,
               after.threads, base.rss_kib, abused.rss_kib, after.rss_kib);
  }
}

}  // namespace
}  // namespace virtgate
