// The domain cache against a real libvirtd (test driver) on a private
// socket, changed over a separate connection as by another tool:
//   - list, then watch from the listing's sequence, under churn: the result
//     is libvirt's state, at every page size and both consistencies;
//   - CACHED reads and send_initial_state snapshots make no libvirt call
//     (virtgated's own count of its libvirt calls), 1,000 watchers at once
//     included.
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/support/client_view.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "tests/support/watch_collector.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using testing::PrivateLibvirtd;
using testing::WaitFor;
using Watcher = testing::WatchCollector;

class DomainCacheIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status started = testing::StartWithAdmin(&daemon_, &admin_);
    ASSERT_TRUE(started.ok()) << started;
  }
  void StartServer() {
    Server::Options o;
    o.libvirt_uri = daemon_->uri();
    o.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    stub_ = v1::Hypervisor::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    // The cache has listed libvirt once.
    ASSERT_TRUE(WaitFor([&] { return server_->cache()->GetStats().current; }, absl::Seconds(30)));
  }
  void TearDown() override {
    stub_.reset();
    server_.reset();
    admin_.reset();
  }
  // Waits until the cache holds `n` domains (their events arrived).
  void WaitForDomains(size_t n) {
    ASSERT_TRUE(WaitFor([&] { return server_->cache()->GetStats().domains == n; },
                        absl::Seconds(60)))
        << server_->cache()->GetStats().domains << " domains in the cache, want " << n;
  }

  // Every page of a listing; the sequence and epoch of its first page.
  struct Listing {
    std::vector<v1::Domain> domains;
    uint64_t sequence = 0;
    std::string epoch;
  };
  absl::StatusOr<Listing> ListAll(int page_size, v1::ReadConsistency consistency) {
    Listing out;
    v1::ListDomainsRequest req;
    req.set_page_size(page_size);
    req.set_consistency(consistency);
    for (int page = 0;; ++page) {
      grpc::ClientContext ctx;
      v1::ListDomainsResponse resp;
      grpc::Status s = stub_->ListDomains(&ctx, req, &resp);
      if (!s.ok()) return absl::Status(absl::StatusCode(s.error_code()), s.error_message());
      if (page == 0) {
        out.sequence = resp.sequence();
        out.epoch = resp.epoch();
      } else if (resp.sequence() != out.sequence || resp.epoch() != out.epoch) {
        return absl::InternalError(absl::StrCat("page ", page, " reflects sequence ",
                                                resp.sequence(), ", the first ", out.sequence));
      }
      for (v1::Domain& d : *resp.mutable_domains()) out.domains.push_back(std::move(d));
      if (resp.next_page_token().empty()) return out;
      req.set_page_token(resp.next_page_token());
    }
  }

  std::unique_ptr<PrivateLibvirtd> daemon_;
  ConnectHandle admin_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
};

// Changes libvirt over a connection of its own until stopped: defines,
// starts, pauses, resumes, destroys and undefines domains, and starts and
// stops transient ones.
class Churner {
 public:
  explicit Churner(const std::string& uri) : uri_(uri) {}
  ~Churner() { Stop(); }
  void Start() {
    stop_ = false;
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    ConnectHandle conn(virConnectOpen(uri_.c_str()));
    for (; !stop_; ++round_) {
      const std::string name = absl::StrFormat("churn-%02d", round_ % 24);
      DomainHandle d(virDomainLookupByName(conn.get(), name.c_str()));
      if (!d) {
        virResetLastError();
        if (round_ % 5 == 0) {  // a transient domain: gone when it stops
          d.reset(virDomainCreateXML(conn.get(), testing::TestDomainXml(name).c_str(), 0));
        } else {
          d.reset(virDomainDefineXML(conn.get(), testing::TestDomainXml(name).c_str()));
        }
        continue;
      }
      int state = 0, reason = 0;
      virDomainGetState(d.get(), &state, &reason, 0);
      if (state == VIR_DOMAIN_SHUTOFF) {
        if (round_ % 3 == 0) {
          virDomainUndefine(d.get());
        } else {
          virDomainCreate(d.get());
        }
      } else if (state == VIR_DOMAIN_RUNNING && round_ % 2 == 0) {
        virDomainSuspend(d.get());
      } else if (state == VIR_DOMAIN_PAUSED) {
        virDomainResume(d.get());
      } else {
        virDomainDestroy(d.get());
      }
      virResetLastError();
    }
  }

  const std::string uri_;
  std::atomic<bool> stop_{false};
  int round_ = 0;  // the churn thread's
  std::thread thread_;
};

// List (while domains change), then watch from the listing's sequence,
// apply the events to the listing: libvirt's own answer, with no event
// that is not a possible transition from what the client holds (nothing
// lost, nothing applied twice). At every page size, FRESH and CACHED, many
// times in one run.
TEST_F(DomainCacheIntegrationTest, ListThenWatchUnderChurnEqualsLibvirt) {
  ASSERT_TRUE(testing::DefineDomains(admin_.get(), "base-", 40, 2).ok());
  StartServer();
  Churner churner(daemon_->uri());
  churner.Start();
  constexpr int kPageSizes[] = {1, 7, 100, 5000};
  for (int round = 0; round < 24; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const int page_size = kPageSizes[(round / 2) % 4];
    const v1::ReadConsistency consistency =
        round % 2 == 0 ? v1::READ_CONSISTENCY_FRESH : v1::READ_CONSISTENCY_CACHED;
    // Changes happen while listing.
    const uint64_t before = server_->events()->last_sequence();
    ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() >= before + 10; },
                        absl::Seconds(30)));
    absl::StatusOr<Listing> listing = ListAll(page_size, consistency);
    ASSERT_TRUE(listing.ok()) << listing.status();
    ASSERT_FALSE(listing->epoch.empty()) << "tied to a sequence";
    v1::WatchLifecycleRequest resume;
    resume.set_resume_after_sequence(listing->sequence);
    resume.set_resume_epoch(listing->epoch);
    Watcher watch(stub_.get(), resume);
    const uint64_t listed_at = server_->events()->last_sequence();
    ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() >= listed_at + 10; },
                        absl::Seconds(30)));
    churner.Stop();
    // A sentinel after the churn: once the watch has it, it has everything.
    const std::string sentinel = absl::StrCat("zz-sentinel-", round);
    DomainHandle s(virDomainDefineXML(admin_.get(), testing::TestDomainXml(sentinel).c_str()));
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(watch.WaitForMessage(
        [&](const v1::WatchLifecycleResponse& m) {
          return m.has_event() && m.event().domain_name() == sentinel;
        },
        absl::Seconds(30)));
    absl::StatusOr<std::map<std::string, testing::TruthEntry>> truth =
        testing::GroundTruth(admin_.get());
    ASSERT_TRUE(truth.ok()) << truth.status();

    testing::ClientView view;
    for (const v1::Domain& d : listing->domains) {
      v1::WatchLifecycleResponse initial;
      *initial.mutable_initial()->mutable_domain() = d;
      ASSERT_EQ(view.Apply(initial), "");
    }
    int events = 0;
    for (const v1::WatchLifecycleResponse& m : watch.Messages()) {
      ASSERT_GT(m.sequence(), listing->sequence) << "the watch resumes after the listing";
      const std::string problem = view.Apply(m);
      EXPECT_EQ(problem, "") << "an event the listing already reflected, or one lost before it";
      events += m.has_event() ? 1 : 0;
    }
    EXPECT_GT(events, 1);
    const std::vector<std::string> diff = view.DiffFrom(*truth);
    EXPECT_TRUE(diff.empty()) << absl::StrJoin(diff, "\n");
    ASSERT_EQ(virDomainUndefine(s.get()), 0);
    churner.Start();
  }
  churner.Stop();
  EXPECT_EQ(server_->cache()->GetStats().drift_resyncs, 0u) << "the cache never drifted";
}

// CACHED listings (every page size) and GetDomain make no libvirt call at
// all, and agree with libvirt on identity and state; facts are those of
// the last FRESH read, with the time they were read.
TEST_F(DomainCacheIntegrationTest, CachedReadsMakeNoLibvirtCall) {
  ASSERT_TRUE(testing::DefineDomains(admin_.get(), "vm-", 300, 2).ok());
  StartServer();
  absl::StatusOr<Listing> fresh = ListAll(0, v1::READ_CONSISTENCY_FRESH);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  const uint64_t calls = server_->libvirt_calls().Total();
  for (int page_size : {1, 50, 5000}) {
    absl::StatusOr<Listing> cached = ListAll(page_size, v1::READ_CONSISTENCY_CACHED);
    ASSERT_TRUE(cached.ok()) << cached.status();
    ASSERT_EQ(cached->domains.size(), fresh->domains.size());
    for (size_t i = 0; i < cached->domains.size(); ++i) {
      const v1::Domain& c = cached->domains[i];
      EXPECT_EQ(c.uuid(), fresh->domains[i].uuid());
      EXPECT_EQ(c.state(), fresh->domains[i].state());
      EXPECT_EQ(c.vcpus(), fresh->domains[i].vcpus()) << "facts of the last fresh read";
      EXPECT_EQ(c.facts_time().seconds(), fresh->domains[i].facts_time().seconds());
      EXPECT_FALSE(c.stale());
    }
  }
  for (const std::string& name : {std::string("vm-00007"), std::string("test")}) {
    grpc::ClientContext ctx;
    v1::GetDomainRequest req;
    req.set_name(name);
    req.set_consistency(v1::READ_CONSISTENCY_CACHED);
    v1::Domain d;
    ASSERT_TRUE(stub_->GetDomain(&ctx, req, &d).ok());
    EXPECT_EQ(d.name(), name);
  }
  grpc::ClientContext ctx;
  v1::GetDomainRequest missing;
  missing.set_name("no-such-domain");
  missing.set_consistency(v1::READ_CONSISTENCY_CACHED);
  v1::Domain d;
  EXPECT_EQ(stub_->GetDomain(&ctx, missing, &d).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(server_->libvirt_calls().Total(), calls) << "CACHED reads called libvirt";
}

// 1,000 watchers open with send_initial_state at once over 1,001 domains:
// every one gets every domain's state (libvirt's), then synced; virtgated
// makes no libvirt call for them.
TEST_F(DomainCacheIntegrationTest, ThousandInitialStateWatchersCostNoLibvirtCall) {
  ASSERT_TRUE(testing::DefineDomains(admin_.get(), "vm-", 1000, 2).ok());
  StartServer();
  WaitForDomains(1001);
  absl::StatusOr<std::map<std::string, testing::TruthEntry>> truth =
      testing::GroundTruth(admin_.get());
  ASSERT_TRUE(truth.ok()) << truth.status();
  const uint64_t calls = server_->libvirt_calls().Total();
  v1::WatchLifecycleRequest req;
  req.set_send_initial_state(true);
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < 1000; ++i) watchers.push_back(std::make_unique<Watcher>(stub_.get(), req));
  for (size_t w = 0; w < watchers.size(); ++w) {
    ASSERT_TRUE(watchers[w]->WaitForCount(1002, absl::Seconds(300))) << "watcher " << w;
    const std::vector<v1::WatchLifecycleResponse> got = watchers[w]->Messages();
    ASSERT_TRUE(got[1001].has_synced()) << "watcher " << w;
    std::map<std::string, testing::TruthEntry> shown;
    for (size_t i = 0; i < 1001; ++i) {
      ASSERT_TRUE(got[i].has_initial()) << "watcher " << w << " message " << i;
      const v1::Domain& d = got[i].initial().domain();
      EXPECT_EQ(got[i].sequence(), got[1001].sequence());
      int state = VIR_DOMAIN_NOSTATE;
      if (d.state() == v1::DOMAIN_STATE_RUNNING) state = VIR_DOMAIN_RUNNING;
      if (d.state() == v1::DOMAIN_STATE_SHUTOFF) state = VIR_DOMAIN_SHUTOFF;
      shown[d.uuid()] = {d.name(), state};
    }
    ASSERT_EQ(shown, *truth) << "watcher " << w;
  }
  EXPECT_EQ(server_->libvirt_calls().Total(), calls) << "snapshots called libvirt";
  watchers.clear();
}

}  // namespace
}  // namespace virtgate
