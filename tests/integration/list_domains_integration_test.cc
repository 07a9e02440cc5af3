// ListDomains/GetDomain against a real libvirtd (test driver) on a private
// socket, compared with what libvirt itself reports over a separate
// connection, as another tool would see it.
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using testing::GroundTruth;
using testing::PrivateLibvirtd;
using testing::TruthEntry;
using testing::WaitFor;

// One daemon, one admin connection and one virtgated for a test suite.
struct Rig {
  absl::Status Start(int domains, int start_every, const std::string& prefix) {
    absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> d = PrivateLibvirtd::Start();
    if (!d.ok()) return d.status();
    daemon = *std::move(d);
    admin.reset(virConnectOpen(daemon->uri().c_str()));
    if (!admin) return absl::InternalError("cannot open admin connection");
    if (absl::Status s = testing::DefineDomains(admin.get(), prefix, domains, start_every);
        !s.ok()) {
      return s;
    }
    Server::Options o;
    o.libvirt_uri = daemon->uri();
    o.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(o);
    if (!s.ok()) return s.status();
    server = *std::move(s);
    channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
    stub = v1::Hypervisor::NewStub(channel);
    return absl::OkStatus();
  }

  grpc::Status ListAll(v1::ListDomainsRequest req, std::vector<v1::Domain>* out,
                       const std::function<void()>& between_pages = nullptr) {
    for (;;) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      v1::ListDomainsResponse resp;
      grpc::Status s = stub->ListDomains(&ctx, req, &resp);
      if (!s.ok()) return s;
      out->insert(out->end(), resp.domains().begin(), resp.domains().end());
      if (resp.next_page_token().empty()) return s;
      req.set_page_token(resp.next_page_token());
      if (between_pages) between_pages();
    }
  }

  bool Serving() {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("virtgate.v1.Hypervisor");  // follows libvirt ("" is the process)
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&ctx, req, &resp).ok() &&
           resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  }

  // Stop virtgated before the daemon so it never logs a spurious loss.
  ~Rig() {
    server.reset();
    admin.reset();
  }

  std::unique_ptr<PrivateLibvirtd> daemon;
  ConnectHandle admin;
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Hypervisor::Stub> stub;
};

std::map<std::string, TruthEntry> AsTruth(const std::vector<v1::Domain>& domains) {
  std::map<std::string, TruthEntry> out;
  for (const v1::Domain& d : domains) {
    // DomainState is virDomainState + 1.
    out[d.uuid()] = {d.name(), static_cast<int>(d.state()) - 1};
  }
  return out;
}

class ListDomainsIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rig_ = new Rig();
    *setup_ = rig_->Start(/*domains=*/1000, /*start_every=*/2, "vm-");  // 500 running
  }
  static void TearDownTestSuite() {
    delete rig_;
    rig_ = nullptr;
  }
  void SetUp() override {
    if (setup_->code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << *setup_;
    ASSERT_TRUE(setup_->ok()) << *setup_;
  }

  static Rig* rig_;
  static absl::Status* setup_;
};

Rig* ListDomainsIntegrationTest::rig_ = nullptr;
absl::Status* ListDomainsIntegrationTest::setup_ = new absl::Status();

TEST_F(ListDomainsIntegrationTest, EqualsLibvirtGroundTruthAtEveryPageSize) {
  absl::StatusOr<std::map<std::string, TruthEntry>> truth = GroundTruth(rig_->admin.get());
  ASSERT_TRUE(truth.ok()) << truth.status();
  ASSERT_EQ(truth->size(), 1001u);  // 1000 + the test driver's own "test"
  int running = 0;
  for (const auto& [uuid, t] : *truth) running += t.state == VIR_DOMAIN_RUNNING ? 1 : 0;
  EXPECT_EQ(running, 501);
  for (int page_size : {0, 7, 100, 333, 1000, 5000}) {
    v1::ListDomainsRequest req;
    req.set_page_size(page_size);
    std::vector<v1::Domain> listed;
    ASSERT_TRUE(rig_->ListAll(req, &listed).ok());
    EXPECT_EQ(listed.size(), 1001u) << "page_size " << page_size;  // no repeats
    EXPECT_EQ(AsTruth(listed), *truth) << "page_size " << page_size;
  }
}

TEST_F(ListDomainsIntegrationTest, FiltersEqualLibvirtsOwnFiltering) {
  for (auto [active, flag] : {std::pair{true, VIR_CONNECT_LIST_DOMAINS_ACTIVE},
                              std::pair{false, VIR_CONNECT_LIST_DOMAINS_INACTIVE}}) {
    absl::StatusOr<std::map<std::string, TruthEntry>> truth =
        GroundTruth(rig_->admin.get(), flag);
    ASSERT_TRUE(truth.ok());
    v1::ListDomainsRequest req;
    req.set_active(active);
    req.set_page_size(128);
    std::vector<v1::Domain> listed;
    ASSERT_TRUE(rig_->ListAll(req, &listed).ok());
    EXPECT_EQ(AsTruth(listed), *truth) << "active=" << active;
  }
}

// Pages are cut by (name, uuid): domains defined and undefined between pages
// (before and after the cursor, and by another thread meanwhile) never make a
// page skip or repeat a domain that exists throughout.
TEST_F(ListDomainsIntegrationTest, PagesNeverSkipOrRepeatWhileOthersChurn) {
  std::atomic<bool> stop{false};
  std::atomic<int> churned{0};
  std::thread churner([&] {
    ConnectHandle conn(virConnectOpen(rig_->daemon->uri().c_str()));
    ASSERT_NE(conn, nullptr);
    for (int i = 0; !stop && i < 100000; ++i) {
      // Names that sort among the stable ones: "vm-00123x".
      const std::string name = absl::StrFormat("vm-%05dx", (i * 37) % 1000);
      DomainHandle d(virDomainDefineXML(conn.get(), testing::TestDomainXml(name).c_str()));
      if (d) {
        virDomainUndefine(d.get());
        ++churned;
      }
    }
  });
  int page = 0;
  std::vector<std::string> extra;  // left defined by the between-page step
  auto between_pages = [&] {
    // Deterministic churn right at the page boundaries, on both sides of the
    // cursor: define a new domain and undefine the previous one.
    const std::string name = absl::StrFormat("vm-%05dy", (page++ * 53) % 1000);
    DomainHandle d(virDomainDefineXML(rig_->admin.get(), testing::TestDomainXml(name).c_str()));
    ASSERT_NE(d, nullptr);
    if (!extra.empty()) {
      DomainHandle old(virDomainLookupByName(rig_->admin.get(), extra.back().c_str()));
      if (old) virDomainUndefine(old.get());
    }
    extra.push_back(name);
  };
  v1::ListDomainsRequest req;
  req.set_page_size(50);
  std::vector<v1::Domain> listed;
  grpc::Status s = rig_->ListAll(req, &listed, between_pages);
  stop = true;
  churner.join();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(churned.load(), 0);
  EXPECT_GE(page, 19);

  std::map<std::string, int> seen;
  for (const v1::Domain& d : listed) ++seen[d.name()];
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(seen[absl::StrFormat("vm-%05d", i)], 1) << "vm-" << i;
  }
  EXPECT_EQ(seen["test"], 1);
  for (const auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;

  for (const std::string& name : extra) {
    DomainHandle d(virDomainLookupByName(rig_->admin.get(), name.c_str()));
    if (d) virDomainUndefine(d.get());
  }
}

// Cost: after the first listing has read each domain's per-domain facts
// (the test driver's bulk stats carry the state only), a listing makes no
// per-domain calls (only the bulk stats of each page).
TEST_F(ListDomainsIntegrationTest, WarmListingFetchesNoPerDomainFacts) {
  std::vector<v1::Domain> listed;
  ASSERT_TRUE(rig_->ListAll({}, &listed).ok());
  const CallCounts& calls = rig_->server->libvirt_calls();
  const uint64_t infos = calls.Get("virDomainGetInfo");
  const uint64_t lookups = calls.Get("virDomainLookupByUUIDString");
  listed.clear();
  ASSERT_TRUE(rig_->ListAll({}, &listed).ok());
  EXPECT_EQ(calls.Get("virDomainGetInfo"), infos);
  EXPECT_EQ(calls.Get("virDomainLookupByUUIDString"), lookups);
  EXPECT_EQ(listed.size(), 1001u);
}

TEST_F(ListDomainsIntegrationTest, GetDomainAgreesWithLibvirt) {
  for (int i : {0, 1, 499, 998, 999}) {
    const std::string name = absl::StrFormat("vm-%05d", i);
    DomainHandle dom(virDomainLookupByName(rig_->admin.get(), name.c_str()));
    ASSERT_NE(dom, nullptr);
    virDomainInfo info;
    ASSERT_EQ(virDomainGetInfo(dom.get(), &info), 0);
    grpc::ClientContext ctx;
    v1::GetDomainRequest req;
    req.set_name(name);
    v1::Domain got;
    ASSERT_TRUE(rig_->stub->GetDomain(&ctx, req, &got).ok());
    EXPECT_EQ(static_cast<int>(got.state()) - 1, info.state) << name;
    EXPECT_EQ(got.vcpus(), info.nrVirtCpu);
    EXPECT_EQ(got.memory_kib(), info.memory);
    EXPECT_EQ(got.max_memory_kib(), info.maxMem);
    EXPECT_TRUE(got.persistent());
  }
}

// A dead connection is noticed and reopened: killing libvirtd makes calls
// fail fast with UNAVAILABLE naming the URI and health NOT_SERVING; a new
// libvirtd on the same socket brings both back without restarting virtgated.
TEST(ReconnectIntegrationTest, SurvivesALibvirtdRestart) {
  Rig rig;
  absl::Status started = rig.Start(/*domains=*/3, /*start_every=*/1, "rc-");
  if (started.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << started;
  ASSERT_TRUE(started.ok()) << started;
  ASSERT_TRUE(rig.Serving());
  rig.admin.reset();
  rig.daemon->Kill();
  ASSERT_TRUE(WaitFor([&] { return !rig.Serving(); }, absl::Seconds(30)));
  {
    grpc::ClientContext ctx;
    v1::ListDomainsResponse resp;
    const absl::Time before = absl::Now();
    grpc::Status s = rig.stub->ListDomains(&ctx, {}, &resp);
    EXPECT_LT(absl::Now() - before, absl::Seconds(1)) << "must fail fast";
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr(rig.daemon->uri()));
  }
  ASSERT_TRUE(rig.daemon->Restart().ok());
  ASSERT_TRUE(WaitFor([&] { return rig.Serving(); }, absl::Seconds(60)));
  std::vector<v1::Domain> listed;
  ASSERT_TRUE(rig.ListAll({}, &listed).ok());
  // The test driver's domains died with the old daemon; the new one has "test".
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name(), "test");
}

// SIGTERM while libvirtd is stopped (SIGSTOP) and a call is stuck in it:
// shutdown still ends within its grace period (plus the pool's short floor).
TEST(StalledLibvirtdIntegrationTest, ShutdownIsBoundedWhileLibvirtdIsStopped) {
  Rig rig;
  absl::Status started = rig.Start(/*domains=*/2, /*start_every=*/1, "st-");
  if (started.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << started;
  ASSERT_TRUE(started.ok()) << started;
  rig.daemon->Pause();
  grpc::ClientContext ctx;
  v1::ListDomainsRequest req;
  v1::ListDomainsResponse resp;
  std::atomic<bool> finished{false};
  grpc::Status call_status;
  rig.stub->async()->ListDomains(&ctx, &req, &resp, [&](grpc::Status s) {
    call_status = s;
    finished = true;
  });
  // The call is inside libvirt (a worker is busy) before we shut down.
  ASSERT_TRUE(WaitFor([&] { return rig.server->workers()->GetStats().busy == 1; },
                      absl::Seconds(10)));
  const absl::Time before = absl::Now();
  rig.server->Shutdown(absl::Seconds(1));
  EXPECT_LT(absl::Now() - before, absl::Seconds(3));
  EXPECT_TRUE(WaitFor([&] { return finished.load(); }, absl::Seconds(5)));
  EXPECT_FALSE(call_status.ok());
  rig.daemon->Resume();
}

// libvirtd stopped at start-up: virtgated starts anyway (after a bounded
// wait), reports NOT_SERVING, and serves once libvirtd answers.
TEST(StalledLibvirtdIntegrationTest, StartsWhileLibvirtdIsStoppedAndServesWhenItAnswers) {
  absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> daemon = PrivateLibvirtd::Start();
  if (daemon.status().code() == absl::StatusCode::kFailedPrecondition) {
    GTEST_SKIP() << daemon.status();
  }
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  (*daemon)->Pause();
  Server::Options o;
  o.libvirt_uri = (*daemon)->uri();
  o.listen = "127.0.0.1:0";
  const absl::Time before = absl::Now();
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(o);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_LT(absl::Now() - before, absl::Seconds(10));
  Rig view;  // only for its health helper
  view.channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  EXPECT_FALSE(view.Serving());
  (*daemon)->Resume();
  EXPECT_TRUE(WaitFor([&] { return view.Serving(); }, absl::Seconds(30)));
  server->reset();
}

// libvirt returns at most 16,384 domains per call; 20,000 must still list.
// Slow (defining 20,000 domains); run apart under the ctest label "slow".
TEST(LargeListingIntegrationTest, DISABLED_Lists20000Domains) {
  Rig rig;
  absl::Status started = rig.Start(/*domains=*/20000, /*start_every=*/2, "big-");
  if (started.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << started;
  ASSERT_TRUE(started.ok()) << started;
  std::map<std::string, TruthEntry> truth;
  for (unsigned int flag : {VIR_CONNECT_LIST_DOMAINS_ACTIVE, VIR_CONNECT_LIST_DOMAINS_INACTIVE}) {
    absl::StatusOr<std::map<std::string, TruthEntry>> part = GroundTruth(rig.admin.get(), flag);
    ASSERT_TRUE(part.ok()) << part.status();
    truth.insert(part->begin(), part->end());
  }
  ASSERT_EQ(truth.size(), 20001u);
  // The limit is real: one unsplit call fails.
  virDomainPtr* doms = nullptr;
  EXPECT_LT(virConnectListAllDomains(rig.admin.get(), &doms, 0), 0);
  v1::ListDomainsRequest req;
  req.set_page_size(5000);
  std::vector<v1::Domain> listed;
  grpc::Status s = rig.ListAll(req, &listed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(listed.size(), 20001u);
  EXPECT_EQ(AsTruth(listed), truth);
}

}  // namespace
}  // namespace virtgate
