// WatchLifecycle against a real libvirtd (test driver) on a private socket:
// the domain changes come from a separate libvirt connection, as from another
// tool, and their events cross processes to virtgated.
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/support/client_view.h"
#include "tests/support/libvirt_direct.h"
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
using testing::Describe;

class WatchLifecycleIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> d = PrivateLibvirtd::Start();
    if (d.status().code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << d.status();
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    admin_ = daemon_->Connect();
    ASSERT_NE(admin_, nullptr);
    StartServer(/*queue_depth=*/1024);
  }
  void StartServer(size_t queue_depth) {
    Server::Options o;
    o.libvirt_uri = daemon_->uri();
    o.listen = "127.0.0.1:0";
    o.watch_queue_depth = queue_depth;
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    stub_ = v1::Hypervisor::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_.reset();
    admin_.reset();
  }
  // Subscribed watchers are registered with the hub before we act.
  void WaitSubscribed(size_t n) {
    ASSERT_TRUE(WaitFor([&] { return server_->events()->subscriber_count() == n; },
                        absl::Seconds(10)));
  }
  DomainHandle Define(const std::string& name) {
    DomainHandle d(virDomainDefineXML(admin_.get(), testing::TestDomainXml(name).c_str()));
    EXPECT_NE(d, nullptr);
    return d;
  }

  std::unique_ptr<PrivateLibvirtd> daemon_;
  ConnectHandle admin_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
};

TEST_F(WatchLifecycleIntegrationTest, EachActionArrivesWithTypeDetailAndGapFreeSequence) {
  Watcher w(stub_.get(), {});
  WaitSubscribed(1);
  DomainHandle d = Define("life");
  ASSERT_EQ(virDomainCreate(d.get()), 0);
  ASSERT_EQ(virDomainSuspend(d.get()), 0);
  ASSERT_EQ(virDomainResume(d.get()), 0);
  ASSERT_EQ(virDomainDestroy(d.get()), 0);
  ASSERT_EQ(virDomainUndefine(d.get()), 0);
  ASSERT_TRUE(w.WaitForCount(6, absl::Seconds(30)));
  std::vector<v1::WatchLifecycleResponse> got = w.Messages();
  std::vector<std::string> described;
  for (const auto& m : got) described.push_back(Describe(m));
  EXPECT_THAT(described, ::testing::ElementsAre(
                             "life LIFECYCLE_EVENT_TYPE_DEFINED/added",
                             "life LIFECYCLE_EVENT_TYPE_STARTED/booted",
                             "life LIFECYCLE_EVENT_TYPE_SUSPENDED/paused",
                             "life LIFECYCLE_EVENT_TYPE_RESUMED/unpaused",
                             "life LIFECYCLE_EVENT_TYPE_STOPPED/destroyed",
                             "life LIFECYCLE_EVENT_TYPE_UNDEFINED/removed"));
  char uuid[VIR_UUID_STRING_BUFLEN];
  virDomainGetUUIDString(d.get(), uuid);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].sequence(), got[0].sequence() + i) << "gap-free";
    EXPECT_EQ(got[i].epoch(), server_->events()->epoch());
    EXPECT_EQ(got[i].event().domain_uuid(), uuid);
    EXPECT_GT(got[i].time().seconds(), 0);
  }
  EXPECT_EQ(got[1].event().type_code(), VIR_DOMAIN_EVENT_STARTED);
  EXPECT_EQ(got[1].event().detail_code(), VIR_DOMAIN_EVENT_STARTED_BOOTED);
  EXPECT_GT(got[1].event().domain_id(), 0u);
}

TEST_F(WatchLifecycleIntegrationTest, HundredWatchersSeeTheIdenticalSequence) {
  constexpr int kWatchers = 100, kEvents = 1000;
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < kWatchers; ++i) watchers.push_back(std::make_unique<Watcher>(stub_.get(), v1::WatchLifecycleRequest()));
  WaitSubscribed(kWatchers);
  for (int i = 0; i < kEvents / 2; ++i) {
    DomainHandle d = Define(absl::StrFormat("many-%04d", i));  // DEFINED
    ASSERT_EQ(virDomainUndefine(d.get()), 0);                  // UNDEFINED
  }
  std::vector<uint64_t> first;
  for (int i = 0; i < kWatchers; ++i) {
    ASSERT_TRUE(watchers[i]->WaitForCount(kEvents, absl::Seconds(60))) << "watcher " << i;
    std::vector<uint64_t> seqs;
    for (const auto& m : watchers[i]->Messages()) seqs.push_back(m.sequence());
    if (i == 0) {
      first = seqs;
      for (size_t k = 1; k < seqs.size(); ++k) ASSERT_EQ(seqs[k], seqs[k - 1] + 1);
    }
    EXPECT_EQ(seqs, first) << "watcher " << i;
  }
}

TEST_F(WatchLifecycleIntegrationTest, FiltersDeliverExactlyTheMatchingEvents) {
  DomainHandle a = Define("fa");
  DomainHandle b = Define("fb");
  // Their DEFINED events cross processes; subscribe only after they did.
  ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() >= 2; }, absl::Seconds(30)));
  char b_uuid[VIR_UUID_STRING_BUFLEN];
  virDomainGetUUIDString(b.get(), b_uuid);
  v1::WatchLifecycleRequest by_name;
  by_name.add_domain_names("fa");
  v1::WatchLifecycleRequest by_uuid;
  by_uuid.add_domain_uuids(b_uuid);
  v1::WatchLifecycleRequest by_type;
  by_type.add_event_types(v1::LIFECYCLE_EVENT_TYPE_STARTED);
  Watcher wn(stub_.get(), by_name), wu(stub_.get(), by_uuid), wt(stub_.get(), by_type);
  Watcher all(stub_.get(), {});
  WaitSubscribed(4);
  ASSERT_EQ(virDomainCreate(a.get()), 0);
  ASSERT_EQ(virDomainCreate(b.get()), 0);
  ASSERT_EQ(virDomainDestroy(a.get()), 0);
  ASSERT_EQ(virDomainDestroy(b.get()), 0);
  ASSERT_TRUE(all.WaitForCount(4, absl::Seconds(30)));  // everything was published
  // Watchers are served independently: wait for each one's share.
  ASSERT_TRUE(wn.WaitForCount(2, absl::Seconds(30)));
  ASSERT_TRUE(wu.WaitForCount(2, absl::Seconds(30)));
  ASSERT_TRUE(wt.WaitForCount(2, absl::Seconds(30)));
  auto names = [](Watcher& w) {
    std::vector<std::string> out;
    for (const auto& m : w.Messages()) out.push_back(Describe(m));
    return out;
  };
  using ::testing::ElementsAre;
  EXPECT_THAT(names(wn), ElementsAre("fa LIFECYCLE_EVENT_TYPE_STARTED/booted",
                                     "fa LIFECYCLE_EVENT_TYPE_STOPPED/destroyed"));
  EXPECT_THAT(names(wu), ElementsAre("fb LIFECYCLE_EVENT_TYPE_STARTED/booted",
                                     "fb LIFECYCLE_EVENT_TYPE_STOPPED/destroyed"));
  EXPECT_THAT(names(wt), ElementsAre("fa LIFECYCLE_EVENT_TYPE_STARTED/booted",
                                     "fb LIFECYCLE_EVENT_TYPE_STARTED/booted"));
}

TEST_F(WatchLifecycleIntegrationTest, ResumeReplaysExactlyTheMissedEvents) {
  std::vector<v1::WatchLifecycleResponse> before;
  {
    Watcher w(stub_.get(), {});
    WaitSubscribed(1);
    Define("r1");
    ASSERT_TRUE(w.WaitForCount(1, absl::Seconds(30)));
    before = w.Messages();
  }
  // Missed while disconnected:
  DomainHandle r2 = Define("r2");
  ASSERT_EQ(virDomainCreate(r2.get()), 0);
  ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() >= before[0].sequence() + 2; },
                      absl::Seconds(30)));
  v1::WatchLifecycleRequest resume;
  resume.set_resume_after_sequence(before[0].sequence());
  resume.set_resume_epoch(before[0].epoch());
  Watcher w(stub_.get(), resume);
  ASSERT_TRUE(w.WaitForCount(2, absl::Seconds(30)));
  std::vector<v1::WatchLifecycleResponse> got = w.Messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].sequence(), before[0].sequence() + 1);
  EXPECT_EQ(Describe(got[0]), "r2 LIFECYCLE_EVENT_TYPE_DEFINED/added");
  EXPECT_EQ(Describe(got[1]), "r2 LIFECYCLE_EVENT_TYPE_STARTED/booted");
}

TEST_F(WatchLifecycleIntegrationTest, ResumePastHistoryOrForeignEpochIsOutOfRange) {
  server_.reset();
  Server::Options o;
  o.libvirt_uri = daemon_->uri();
  o.listen = "127.0.0.1:0";
  o.event_history = 2;
  server_ = *Server::BuildAndStart(o);
  stub_ = v1::Hypervisor::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 3; ++i) Define(absl::StrFormat("h%d", i));
  ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() == 3; }, absl::Seconds(30)));
  v1::WatchLifecycleRequest old;
  old.set_resume_after_sequence(0 + 1);  // history holds 2..3: after 1 is fine
  old.set_resume_epoch(server_->events()->epoch());
  {
    Watcher ok(stub_.get(), old);
    EXPECT_TRUE(ok.WaitForCount(2, absl::Seconds(30)));
  }
  Define("h3");  // history now 3..4
  ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() == 4; }, absl::Seconds(30)));
  Watcher too_old(stub_.get(), old);
  std::optional<grpc::Status> s = too_old.WaitForEnd(absl::Seconds(30));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->error_code(), grpc::StatusCode::OUT_OF_RANGE);
  v1::WatchLifecycleRequest foreign = old;
  foreign.set_resume_epoch("0123");
  Watcher other(stub_.get(), foreign);
  s = other.WaitForEnd(absl::Seconds(30));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->error_code(), grpc::StatusCode::OUT_OF_RANGE);
}

TEST_F(WatchLifecycleIntegrationTest, StalledWatcherOverflowsAloneAndResumesWithoutLoss) {
  server_.reset();
  StartServer(/*queue_depth=*/256);
  Watcher reading(stub_.get(), {});
  // A client that stops reading stalls the server's writes once HTTP/2 flow
  // control runs out; a small window (and no BDP growth) makes that happen
  // after a few messages rather than megabytes.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto slow_stub = v1::Hypervisor::NewStub(grpc::CreateCustomChannel(
      server_->address(), grpc::InsecureChannelCredentials(), args));
  Watcher stalled(slow_stub.get(), {}, /*read=*/false);  // never reads until we say
  WaitSubscribed(2);
  // Enough events to fill the stalled stream's window and then its queue.
  constexpr int kPairs = 500;
  for (int i = 0; i < kPairs; ++i) {
    DomainHandle d = Define(absl::StrFormat("o%05d", i));
    ASSERT_EQ(virDomainUndefine(d.get()), 0);
  }
  ASSERT_TRUE(reading.WaitForCount(2 * kPairs, absl::Seconds(120)));
  EXPECT_FALSE(reading.WaitForEnd(absl::ZeroDuration()).has_value()) << "still open";
  stalled.StartReading();
  std::optional<grpc::Status> end = stalled.WaitForEnd(absl::Seconds(60));
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << end->error_message();
  uint64_t last = 0;
  ASSERT_TRUE(absl::SimpleAtoi(stalled.Trailer("virtgate-last-sequence"), &last));
  std::vector<v1::WatchLifecycleResponse> got = stalled.Messages();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().sequence(), last);
  EXPECT_THAT(end->error_message(), ::testing::HasSubstr(absl::StrCat("last sequence ", last)));
  // Resume from there: together they are exactly what the reader saw.
  v1::WatchLifecycleRequest resume;
  resume.set_resume_after_sequence(last);
  resume.set_resume_epoch(server_->events()->epoch());
  Watcher resumed(stub_.get(), resume);
  const size_t missing = 2 * kPairs - got.size();
  ASSERT_TRUE(resumed.WaitForCount(missing, absl::Seconds(60)));
  std::vector<uint64_t> all, expected;
  for (const auto& m : got) all.push_back(m.sequence());
  for (const auto& m : resumed.Messages()) all.push_back(m.sequence());
  for (const auto& m : reading.Messages()) expected.push_back(m.sequence());
  EXPECT_EQ(all, expected);
}

TEST_F(WatchLifecycleIntegrationTest, InitialStateShowsEveryDomainThenSynced) {
  DomainHandle a = Define("i-a");
  DomainHandle b = Define("i-b");
  ASSERT_EQ(virDomainCreate(b.get()), 0);
  ASSERT_EQ(virDomainSuspend(b.get()), 0);
  // The cache has the suspend (the events cross processes): otherwise the
  // snapshot may be older and the events arrive as live ones after it.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::optional<DomainCache::Record> r = server_->cache()->FindByName("i-b");
        return r.has_value() && *r != nullptr && (*r)->state() == v1::DOMAIN_STATE_PAUSED;
      },
      absl::Seconds(30)));
  v1::WatchLifecycleRequest req;
  req.set_send_initial_state(true);
  Watcher w(stub_.get(), req);
  ASSERT_TRUE(w.WaitForCount(4, absl::Seconds(30)));  // test, i-a, i-b, synced
  std::vector<v1::WatchLifecycleResponse> got = w.Messages();
  std::map<std::string, v1::DomainState> shown;
  for (size_t i = 0; i + 1 < got.size(); ++i) {
    ASSERT_TRUE(got[i].has_initial()) << i;
    shown[got[i].initial().domain().name()] = got[i].initial().domain().state();
  }
  EXPECT_TRUE(got.back().has_synced());
  EXPECT_EQ(shown, (std::map<std::string, v1::DomainState>{
                       {"i-a", v1::DOMAIN_STATE_SHUTOFF},
                       {"i-b", v1::DOMAIN_STATE_PAUSED},
                       {"test", v1::DOMAIN_STATE_RUNNING}}));
  // Live events follow the marker.
  ASSERT_EQ(virDomainCreate(a.get()), 0);
  ASSERT_TRUE(w.WaitForCount(5, absl::Seconds(30)));
  EXPECT_EQ(Describe(w.Messages()[4]), "i-a LIFECYCLE_EVENT_TYPE_STARTED/booted");
}

TEST_F(WatchLifecycleIntegrationTest, InitialViewPlusEventsEqualsLibvirtUnderChurn) {
  constexpr int kDomains = 20;
  std::vector<std::string> names;
  for (int i = 0; i < kDomains; ++i) {
    names.push_back(absl::StrFormat("churn-%02d", i));
    Define(names.back());
  }
  // Before the churn: libvirt's own subscription, and a watcher without a
  // snapshot whose stream is compared with it, domain by domain.
  absl::StatusOr<std::unique_ptr<testing::DirectEvents>> direct =
      testing::DirectEvents::Subscribe(admin_.get(), "");
  ASSERT_TRUE(direct.ok()) << direct.status();
  Watcher reference(stub_.get(), {});
  WaitSubscribed(1);
  std::atomic<bool> stop{false};
  std::thread churner([&] {
    ConnectHandle conn = daemon_->Connect();
    for (int round = 0; !stop && round < 100000; ++round) {
      DomainHandle d(virDomainLookupByName(conn.get(), names[round % kDomains].c_str()));
      int state = 0, reason = 0;
      virDomainGetState(d.get(), &state, &reason, 0);
      if (state == VIR_DOMAIN_SHUTOFF) virDomainCreate(d.get());
      else if (state == VIR_DOMAIN_RUNNING && round % 3 == 0) virDomainSuspend(d.get());
      else if (state == VIR_DOMAIN_PAUSED) virDomainResume(d.get());
      else virDomainDestroy(d.get());
    }
  });
  // Several watches start while states change under them.
  std::vector<std::unique_ptr<Watcher>> watchers;
  v1::WatchLifecycleRequest req;
  req.set_send_initial_state(true);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() >= uint64_t(40 * (i + 1)); },
                        absl::Seconds(30)));
    watchers.push_back(std::make_unique<Watcher>(stub_.get(), req));
  }
  ASSERT_TRUE(WaitFor([&] { return server_->events()->last_sequence() >= 400; }, absl::Seconds(60)));
  stop = true;
  churner.join();
  // A sentinel after the churn: once a watcher has it, it has everything.
  Define("zz-sentinel");
  absl::StatusOr<std::map<std::string, testing::TruthEntry>> truth = testing::GroundTruth(admin_.get());
  ASSERT_TRUE(truth.ok());
  for (size_t w = 0; w < watchers.size(); ++w) {
    ASSERT_TRUE(WaitFor([&] {
      for (const auto& m : watchers[w]->Messages()) {
        if (m.has_event() && m.event().domain_name() == "zz-sentinel") return true;
      }
      return false;
    }, absl::Seconds(60))) << "watcher " << w;
    testing::ClientView view;
    bool synced = false;
    int events = 0;
    for (const auto& m : watchers[w]->Messages()) {
      if (m.has_initial()) {
        ASSERT_FALSE(synced) << "initial state only before the marker";
      }
      if (m.has_synced()) synced = true;
      if (m.has_event()) {
        ASSERT_TRUE(synced) << "events only after the marker";
        ++events;
      }
      // Each delivered event must be a valid transition from what the
      // client has: a duplicate of something already shown is not.
      const std::string problem = view.Apply(m);
      EXPECT_TRUE(problem.empty()) << "watcher " << w << " " << problem;
    }
    EXPECT_GT(events, 0) << "watcher " << w << " saw live churn";
    // ... and the result is libvirt's final state (nothing lost).
    const std::vector<std::string> diff = view.DiffFrom(*truth);
    EXPECT_TRUE(diff.empty()) << "watcher " << w << ":\n" << absl::StrJoin(diff, "\n");
  }

  // Transition by transition: final views cannot show a lost pair (a
  // SUSPENDED then RESUMED). The reference watcher's events, per domain,
  // are libvirt's own, type and detail, in order...
  auto has_sentinel = [](const std::vector<v1::WatchLifecycleResponse>& ms) {
    for (const auto& m : ms) {
      if (m.has_event() && m.event().domain_name() == "zz-sentinel") return true;
    }
    return false;
  };
  ASSERT_TRUE(WaitFor([&] { return has_sentinel(reference.Messages()); }, absl::Seconds(60)));
  ASSERT_TRUE((*direct)->WaitForEvent(
      [](const testing::DirectEvents::Event& e) { return e.name == "zz-sentinel"; },
      absl::Seconds(60)));
  std::map<std::string, std::vector<std::string>> libvirt;
  // DEFINED events are left out on both sides: the 20 defines above may
  // reach one subscriber and not the other (both subscribed just after);
  // the churn defines nothing.
  for (const auto& e : (*direct)->Events()) {
    if (e.type == VIR_DOMAIN_EVENT_DEFINED) continue;
    libvirt[e.name].push_back(absl::StrCat(e.type, "/", e.detail));
  }
  const std::vector<v1::WatchLifecycleResponse> all = reference.Messages();
  std::map<std::string, std::vector<std::string>> got;
  std::map<uint64_t, std::string> by_sequence;
  for (const auto& m : all) {
    if (!m.has_event()) continue;
    by_sequence[m.sequence()] = Describe(m);
    if (m.event().synthetic() || m.event().type_code() == VIR_DOMAIN_EVENT_DEFINED) continue;
    got[m.event().domain_name()].push_back(
        absl::StrCat(m.event().type_code(), "/", m.event().detail_code()));
  }
  EXPECT_EQ(got, libvirt) << "virtgate's events (type/detail codes) differ from libvirt's";
  // ... and every late watcher got exactly the reference's events after its
  // snapshot's sequence: none lost, none repeated, none reordered.
  for (size_t w = 0; w < watchers.size(); ++w) {
    std::optional<uint64_t> synced;
    std::vector<std::string> after, want;
    for (const auto& m : watchers[w]->Messages()) {
      if (m.has_synced()) synced = m.sequence();
      if (m.has_event()) after.push_back(absl::StrCat(m.sequence(), " ", Describe(m)));
    }
    ASSERT_TRUE(synced.has_value()) << "watcher " << w;
    for (auto it = by_sequence.upper_bound(*synced); it != by_sequence.end(); ++it) {
      want.push_back(absl::StrCat(it->first, " ", it->second));
    }
    EXPECT_EQ(after, want) << "watcher " << w << " (synced at " << *synced << ")";
  }
}

// A burst within the window arrives as each domain's final transition, in
// sequence order; the raw watcher beside it sees every event.
TEST_F(WatchLifecycleIntegrationTest, CoalescingDeliversEachDomainsFinalTransition) {
  v1::WatchLifecycleRequest req;
  req.set_coalesce_ms(3000);  // far longer than the burst below takes
  Watcher coalesced(stub_.get(), req);
  Watcher raw(stub_.get(), {});
  WaitSubscribed(2);
  DomainHandle a = Define("co-a");        // DEFINED
  ASSERT_EQ(virDomainCreate(a.get()), 0);  // STARTED
  DomainHandle b = Define("co-b");        // DEFINED
  ASSERT_EQ(virDomainSuspend(a.get()), 0);  // SUSPENDED
  ASSERT_EQ(virDomainCreate(b.get()), 0);  // STARTED
  ASSERT_EQ(virDomainDestroy(a.get()), 0);  // STOPPED: a's final transition
  ASSERT_TRUE(raw.WaitForCount(6, absl::Seconds(30)));
  ASSERT_TRUE(coalesced.WaitForCount(2, absl::Seconds(30)));
  std::vector<v1::WatchLifecycleResponse> got = coalesced.Messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(Describe(got[0]), "co-b LIFECYCLE_EVENT_TYPE_STARTED/booted");
  EXPECT_EQ(Describe(got[1]), "co-a LIFECYCLE_EVENT_TYPE_STOPPED/destroyed");
  EXPECT_LT(got[0].sequence(), got[1].sequence());
  EXPECT_EQ(got[1].sequence(), raw.Messages().back().sequence());
}

TEST_F(WatchLifecycleIntegrationTest, CancelFreesAndShutdownEndsWatchesPromptly) {
  {
    std::vector<std::unique_ptr<Watcher>> ws;
    for (int i = 0; i < 20; ++i) ws.push_back(std::make_unique<Watcher>(stub_.get(), v1::WatchLifecycleRequest()));
    WaitSubscribed(20);
  }  // cancelled
  EXPECT_TRUE(WaitFor([&] { return server_->events()->subscriber_count() == 0 &&
                                   server_->service()->open_watches() == 0; },
                      absl::Seconds(10)));
  Watcher w(stub_.get(), {});
  WaitSubscribed(1);
  Define("last");
  ASSERT_TRUE(w.WaitForCount(1, absl::Seconds(30)));
  const absl::Time before = absl::Now();
  server_->Shutdown(absl::Seconds(10));
  EXPECT_LT(absl::Now() - before, absl::Seconds(3)) << "watches must not hold shutdown";
  std::optional<grpc::Status> end = w.WaitForEnd(absl::Seconds(10));
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(end->error_message(), ::testing::HasSubstr("shutting down"));
  // It says what works: a new watch with the initial state, not a resume
  // (the next instance has a new epoch).
  EXPECT_THAT(end->error_message(), ::testing::HasSubstr("start a new watch with send_initial_state"));
  EXPECT_EQ(w.Trailer("virtgate-last-sequence"), absl::StrCat(w.Messages().back().sequence()));
}

}  // namespace
}  // namespace virtgate
