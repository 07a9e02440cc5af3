// The whole gRPC surface of an in-process virtgated on test:///default (a
// real, in-process libvirt driver), called through the generated stub.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/libvirt/event_loop.h"
#include "server/libvirt/handles.h"
#include "server/server.h"
#include "tests/support/call_watchdog.h"
#include "tests/support/wait_for.h"
#include "tests/support/test_domains.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;

constexpr char kTestUuid[] = "6695eb01-f6a4-8304-79aa-97f2502e193f";

std::unique_ptr<Server> StartServer(Server::Options options) {
  options.listen = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

Server::Options TestDriverOptions() {
  Server::Options o;
  o.libvirt_uri = "test:///default";
  return o;
}

std::unique_ptr<v1::Hypervisor::Stub> StubFor(const Server& server) {
  return v1::Hypervisor::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

// Occupies one of the server's own workers until Release(): it stands in for
// a libvirt call that takes long, without a fake.
class BusyWorker {
 public:
  explicit BusyWorker(Server* server) {
    auto started = std::make_shared<absl::Notification>();
    ok_ = server->workers()
              ->Submit([started, release = release_](bool) {
                started->Notify();
                release->WaitForNotification();
              })
              .ok();
    if (ok_) started->WaitForNotification();
  }
  ~BusyWorker() { Release(); }
  bool ok() const { return ok_; }
  void Release() {
    if (!release_->HasBeenNotified()) release_->Notify();
  }

 private:
  std::shared_ptr<absl::Notification> release_ = std::make_shared<absl::Notification>();
  bool ok_ = false;
};

class HypervisorServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(EnsureLibvirtEventLoop().ok());
    // test:///default forgets its domains when its last connection closes:
    // this read-write connection keeps them, and is how the test changes them.
    admin_ = virConnectOpen("test:///default");
    ASSERT_NE(admin_, nullptr);
  }
  static void TearDownTestSuite() { virConnectClose(admin_); }

  void SetUp() override {
    server_ = StartServer(TestDriverOptions());
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Hypervisor::NewStub(channel_);
  }
  void TearDown() override {
    for (const std::string& name : defined_) {
      DomainHandle d(virDomainLookupByName(admin_, name.c_str()));
      if (!d) continue;
      virDomainDestroy(d.get());
      virDomainUndefine(d.get());
    }
  }

  // Defines (and starts) domains through libvirt, as another tool would,
  // and waits until their events reached virtgated's cache (reads see the
  // cache, which trails libvirt by the delivery of its events).
  void Define(const std::string& prefix, int count, int start_every = 0) {
    const uint64_t before = server_->events()->last_sequence();
    ASSERT_TRUE(testing::DefineDomains(admin_, prefix, count, start_every).ok());
    for (int i = 0; i < count; ++i) defined_.push_back(absl::StrFormat("%s%05d", prefix, i));
    const uint64_t started = start_every > 0 ? (count + start_every - 1) / start_every : 0;
    ASSERT_TRUE(testing::WaitFor(
        [&] { return server_->events()->last_sequence() >= before + count + started; },
        absl::Seconds(30)));
  }

  grpc::Status List(const v1::ListDomainsRequest& req, v1::ListDomainsResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->ListDomains(&ctx, req, resp);
  }

  // Follows every page; fails the test on an error.
  std::vector<v1::Domain> ListAll(v1::ListDomainsRequest req) {
    std::vector<v1::Domain> out;
    for (int pages = 0; pages < 10000; ++pages) {
      v1::ListDomainsResponse resp;
      grpc::Status s = List(req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      out.insert(out.end(), resp.domains().begin(), resp.domains().end());
      if (resp.next_page_token().empty()) break;
      req.set_page_token(resp.next_page_token());
    }
    return out;
  }

  // A watch the server must refuse: no message, then its status.
  grpc::Status RefusedWatch(const v1::WatchLifecycleRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto reader = stub_->WatchLifecycle(&ctx, req);
    v1::WatchLifecycleResponse msg;
    EXPECT_FALSE(reader->Read(&msg));
    return reader->Finish();
  }

  grpc::Status Get(const std::string& uuid, const std::string& name, v1::Domain* out) {
    v1::GetDomainRequest req;
    req.set_uuid(uuid);
    req.set_name(name);
    grpc::ClientContext ctx;
    return stub_->GetDomain(&ctx, req, out);
  }

  static virConnectPtr admin_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
  std::vector<std::string> defined_;
};

virConnectPtr HypervisorServiceTest::admin_ = nullptr;

std::vector<std::string> Names(const std::vector<v1::Domain>& domains) {
  std::vector<std::string> names;
  for (const v1::Domain& d : domains) names.push_back(d.name());
  return names;
}

TEST_F(HypervisorServiceTest, ListsTheDefaultTestDomainWithAllItsFields) {
  std::vector<v1::Domain> all = ListAll({});
  auto it = std::find_if(all.begin(), all.end(), [](const v1::Domain& d) { return d.name() == "test"; });
  ASSERT_NE(it, all.end());
  EXPECT_EQ(it->uuid(), kTestUuid);
  EXPECT_EQ(it->state(), v1::DOMAIN_STATE_RUNNING);
  // The reason is libvirt's own (the test driver's default domain says 0).
  int state = 0, reason = -1;
  DomainHandle dom(virDomainLookupByName(admin_, "test"));
  ASSERT_EQ(virDomainGetState(dom.get(), &state, &reason, 0), 0);
  EXPECT_EQ(it->state_reason_code(), reason);
  EXPECT_EQ(it->state_reason(), reason == 0 ? "unknown" : "booted");
  EXPECT_GT(it->id(), 0u);
  EXPECT_TRUE(it->persistent());
  EXPECT_FALSE(it->autostart());
  EXPECT_EQ(it->vcpus(), 2u);
  EXPECT_EQ(it->memory_kib(), 2097152u);
  EXPECT_EQ(it->max_memory_kib(), 8388608u);
  EXPECT_FALSE(it->stale());
}

TEST_F(HypervisorServiceTest, PagesCoverEveryDomainOnceInNameOrder) {
  Define("page-", 25, /*start_every=*/3);
  const std::vector<v1::Domain> one_page = ListAll({});
  for (int page_size : {1, 7, 25, 26}) {
    v1::ListDomainsRequest req;
    req.set_page_size(page_size);
    std::vector<v1::Domain> paged = ListAll(req);
    EXPECT_EQ(Names(paged), Names(one_page)) << "page_size " << page_size;
  }
  std::vector<std::string> names = Names(one_page);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size());
  EXPECT_EQ(names.size(), 26u);  // 25 + "test"

  v1::ListDomainsRequest req;
  req.set_page_size(10);
  v1::ListDomainsResponse first;
  ASSERT_TRUE(List(req, &first).ok());
  EXPECT_EQ(first.domains_size(), 10);
  EXPECT_FALSE(first.next_page_token().empty());
}

TEST_F(HypervisorServiceTest, FiltersMapOntoLibvirtFlags) {
  Define("filt-", 6, /*start_every=*/2);  // 0, 2, 4 running
  {
    DomainHandle d(virDomainLookupByName(admin_, "filt-00002"));
    ASSERT_EQ(virDomainSuspend(d.get()), 0);
    DomainHandle a(virDomainLookupByName(admin_, "filt-00001"));
    ASSERT_EQ(virDomainSetAutostart(a.get(), 1), 0);
  }
  DomainHandle transient(virDomainCreateXML(admin_, testing::TestDomainXml("filt-tr").c_str(), 0));
  ASSERT_NE(transient, nullptr);
  defined_.push_back("filt-tr");

  auto names_for = [&](v1::ListDomainsRequest req) {
    std::vector<std::string> out;
    for (const std::string& n : Names(ListAll(req))) {
      if (n.rfind("filt-", 0) == 0) out.push_back(n);
    }
    return out;
  };
  using ::testing::ElementsAre;
  v1::ListDomainsRequest inactive;
  inactive.set_active(false);
  EXPECT_THAT(names_for(inactive), ElementsAre("filt-00001", "filt-00003", "filt-00005"));
  v1::ListDomainsRequest paused;
  paused.add_states(v1::DOMAIN_STATE_PAUSED);
  EXPECT_THAT(names_for(paused), ElementsAre("filt-00002"));
  v1::ListDomainsRequest running;
  running.add_states(v1::DOMAIN_STATE_RUNNING);
  EXPECT_THAT(names_for(running), ElementsAre("filt-00000", "filt-00004", "filt-tr"));
  v1::ListDomainsRequest autostart;
  autostart.set_autostart(true);
  EXPECT_THAT(names_for(autostart), ElementsAre("filt-00001"));
  v1::ListDomainsRequest trans;
  trans.set_persistent(false);
  EXPECT_THAT(names_for(trans), ElementsAre("filt-tr"));
  v1::ListDomainsRequest both;  // ANDed
  both.set_active(true);
  both.set_persistent(true);
  both.add_states(v1::DOMAIN_STATE_RUNNING);
  EXPECT_THAT(names_for(both), ElementsAre("filt-00000", "filt-00004"));
  // A state libvirt's flags only express as "other" is filtered exactly.
  v1::ListDomainsRequest crashed;
  crashed.add_states(v1::DOMAIN_STATE_CRASHED);
  EXPECT_THAT(names_for(crashed), ElementsAre());

  for (const v1::Domain& d : ListAll(trans)) {
    if (d.name() == "filt-tr") {
      EXPECT_FALSE(d.persistent());
    }
  }
}

TEST_F(HypervisorServiceTest, BadListRequestsAreInvalidArgument) {
  v1::ListDomainsResponse resp;
  v1::ListDomainsRequest negative;
  negative.set_page_size(-1);
  grpc::Status s = List(negative, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_size"));

  v1::ListDomainsRequest forged;
  forged.set_page_token("bm90IGEgdG9rZW4");
  s = List(forged, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token"));

  // A real token, tampered with.
  Define("tok-", 3);
  v1::ListDomainsRequest first;
  first.set_page_size(1);
  ASSERT_TRUE(List(first, &resp).ok());
  ASSERT_FALSE(resp.next_page_token().empty());
  std::string token = resp.next_page_token();
  token[token.size() / 2] = token[token.size() / 2] == 'x' ? 'y' : 'x';
  v1::ListDomainsRequest tampered = first;
  tampered.set_page_token(token);
  s = List(tampered, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("not issued by this server process"));

  // A genuine token with other filters.
  ASSERT_TRUE(List(first, &resp).ok());
  v1::ListDomainsRequest refiltered = first;
  refiltered.set_page_token(resp.next_page_token());
  refiltered.set_active(true);
  s = List(refiltered, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("different filters"));

  // A genuine token from another server process (as after a restart): its
  // key was another.
  std::unique_ptr<Server> other = StartServer(TestDriverOptions());
  ASSERT_NE(other, nullptr);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(StubFor(*other)->ListDomains(&ctx, first, &resp).ok());
  }
  ASSERT_FALSE(resp.next_page_token().empty());
  v1::ListDomainsRequest foreign = first;
  foreign.set_page_token(resp.next_page_token());
  s = List(foreign, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("not issued by this server process"));
  EXPECT_THAT(s.error_message(), HasSubstr("start the listing over with an empty page_token"));

  v1::ListDomainsRequest unspecified;
  unspecified.add_states(v1::DOMAIN_STATE_UNSPECIFIED);
  EXPECT_EQ(List(unspecified, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(HypervisorServiceTest, PageSizeIsCappedAndDefaulted) {
  Define("cap-", 5005);  // 5,006 with the test driver's own
  v1::ListDomainsResponse resp;
  ASSERT_TRUE(List(v1::ListDomainsRequest(), &resp).ok());
  EXPECT_EQ(resp.domains_size(), 500) << "page_size 0: the default";
  EXPECT_FALSE(resp.next_page_token().empty());
  v1::ListDomainsRequest huge;
  huge.set_page_size(1 << 30);
  ASSERT_TRUE(List(huge, &resp).ok());
  EXPECT_EQ(resp.domains_size(), 5000) << "capped";
  ASSERT_FALSE(resp.next_page_token().empty());
  huge.set_page_token(resp.next_page_token());
  ASSERT_TRUE(List(huge, &resp).ok());
  EXPECT_EQ(resp.domains_size(), 6) << "the rest";
  EXPECT_TRUE(resp.next_page_token().empty());
}

TEST_F(HypervisorServiceTest, GetDomainByNameOrUuid) {
  v1::Domain by_name, by_uuid, by_odd_uuid;
  ASSERT_TRUE(Get("", "test", &by_name).ok());
  EXPECT_EQ(by_name.uuid(), kTestUuid);
  EXPECT_EQ(by_name.state(), v1::DOMAIN_STATE_RUNNING);
  EXPECT_EQ(by_name.vcpus(), 2u);
  ASSERT_TRUE(Get(kTestUuid, "", &by_uuid).ok());
  EXPECT_EQ(by_uuid.name(), "test");
  // Any case, no dashes.
  ASSERT_TRUE(Get("6695EB01F6A4830479AA97F2502E193F", "", &by_odd_uuid).ok());
  EXPECT_EQ(by_odd_uuid.name(), "test");
}

TEST_F(HypervisorServiceTest, GetDomainErrors) {
  v1::Domain d;
  grpc::Status s = Get("", "no-such-domain", &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("no-such-domain"));
  EXPECT_EQ(Get("00000000-0000-0000-0000-000000000001", "", &d).error_code(),
            grpc::StatusCode::NOT_FOUND);
  s = Get("not-a-uuid", "", &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("malformed uuid"));
  EXPECT_EQ(Get(kTestUuid, "test", &d).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get("", "", &d).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// State comes from the event-fed cache (README "Reads"), so a start is seen
// once its event has arrived, which under load may take a moment: wait for
// it, with a deadline, then the new id and its facts must come with it.
TEST_F(HypervisorServiceTest, GetDomainSeesChangesOnceTheirEventArrived) {
  Define("chg-", 1);
  v1::Domain d;
  ASSERT_TRUE(Get("", "chg-00000", &d).ok());
  EXPECT_EQ(d.state(), v1::DOMAIN_STATE_SHUTOFF);
  EXPECT_EQ(d.id(), 0u);
  DomainHandle dom(virDomainLookupByName(admin_, "chg-00000"));
  ASSERT_EQ(virDomainCreate(dom.get()), 0);
  ASSERT_TRUE(testing::WaitFor(
      [&] { return Get("", "chg-00000", &d).ok() && d.state() == v1::DOMAIN_STATE_RUNNING; },
      absl::Seconds(30)))
      << d.DebugString();
  EXPECT_GT(d.id(), 0u);
  // And the listing agrees (its cached facts are keyed by id, which changed).
  for (const v1::Domain& l : ListAll({})) {
    if (l.name() == "chg-00000") {
      EXPECT_EQ(l.state(), v1::DOMAIN_STATE_RUNNING);
      EXPECT_EQ(l.id(), d.id());
    }
  }
}

// Autostart and persistence change without a new id or any other sign;
// listings read them from libvirt every time, never from a stale cache.
TEST_F(HypervisorServiceTest, ListingsSeeAutostartAndPersistenceChangesAtOnce) {
  Define("flip-", 2, /*start_every=*/1);  // both running
  auto find = [&](const std::string& name) {
    for (const v1::Domain& d : ListAll({})) {
      if (d.name() == name) return d;
    }
    ADD_FAILURE() << name << " not listed";
    return v1::Domain();
  };
  EXPECT_FALSE(find("flip-00000").autostart());
  EXPECT_TRUE(find("flip-00001").persistent());  // the cache now holds both

  DomainHandle a(virDomainLookupByName(admin_, "flip-00000"));
  ASSERT_EQ(virDomainSetAutostart(a.get(), 1), 0);  // no event: a fresh read sees it
  DomainHandle b(virDomainLookupByName(admin_, "flip-00001"));
  const uint64_t before = server_->events()->last_sequence();
  ASSERT_EQ(virDomainUndefine(b.get()), 0);  // running, so it becomes transient
  // Persistence comes with the UNDEFINED event, which reads wait for.
  ASSERT_TRUE(testing::WaitFor([&] { return server_->events()->last_sequence() > before; },
                               absl::Seconds(30)));

  EXPECT_TRUE(find("flip-00000").autostart());
  EXPECT_FALSE(find("flip-00001").persistent());
  v1::ListDomainsRequest autostart;
  autostart.set_autostart(true);
  std::vector<std::string> names;
  for (const v1::Domain& d : ListAll(autostart)) names.push_back(d.name());
  EXPECT_THAT(names, ::testing::ElementsAre("flip-00000"));
}

TEST_F(HypervisorServiceTest, HostInfoDescribesTheTestDriver) {
  v1::HostInfo info;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->GetHostInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.hypervisor_type(), "TEST");
  EXPECT_FALSE(info.hostname().empty());
  EXPECT_GT(info.cpus(), 0u);
  EXPECT_GT(info.memory_kib(), 0u);
  EXPECT_FALSE(info.cpu_model().empty());
  EXPECT_THAT(info.libvirt_version(), ::testing::MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
  EXPECT_EQ(info.uri(), "test:///default");
  EXPECT_TRUE(info.connection().up());
  EXPECT_EQ(info.connection().connections_up(),
            static_cast<uint32_t>(Server::Options{}.pool_size));
  EXPECT_TRUE(info.connection().read_only());
  EXPECT_FALSE(info.server_version().empty());
}

TEST_F(HypervisorServiceTest, HealthIsServingWithLibvirtUp) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const std::string& service : {std::string(""), std::string("virtgate.v1.Hypervisor")}) {
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << service;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

// What comes back is bounded and on one line, whatever the request held: a
// 100,000-byte name used to come back whole in the status, which gRPC's C
// core refuses ("metadata size exceeds limit") and reports as
// RESOURCE_EXHAUSTED instead of the real error. Names are checked before
// they reach libvirt (a NUL would cut them there). (A name that long no
// longer gets here: a request over --max_request_bytes, 64 KiB, is refused
// by gRPC itself; see limits_test. 60,000 bytes still would not fit in a
// status.)
TEST_F(HypervisorServiceTest, InputIsCheckedAndComesBackBoundedAndEscaped) {
  constexpr size_t kBounded = 1200;  // BoundMessage's 1,024 and its suffix
  const std::string huge(60000, 'x');
  v1::Domain d;
  grpc::Status s = Get("", huge, &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().size();
  EXPECT_THAT(s.error_message(), HasSubstr("is longer than 1024 bytes"));
  EXPECT_THAT(s.error_message(), HasSubstr("(60000 bytes)"));
  EXPECT_LT(s.error_message().size(), 300u);

  s = Get("", std::string("test\0", 5), &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "found the domain \"test\"";
  EXPECT_THAT(s.error_message(), HasSubstr("contains a NUL byte"));

  s = Get(huge, "", &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("malformed uuid"));
  EXPECT_LT(s.error_message().size(), 300u);

  // Not found, by a name libvirt echoes in its own message: bounded, and a
  // control character comes back escaped.
  const std::string odd = "no\x01such-" + std::string(1000, 'y');
  s = Get("", odd, &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_LT(s.error_message().size(), kBounded);
  EXPECT_EQ(s.error_message().find('\x01'), std::string::npos);
  EXPECT_THAT(s.error_message(), HasSubstr("\\x01"));

  v1::ListDomainsRequest list;
  list.set_page_token(std::string(5000, 'A'));
  v1::ListDomainsResponse listed;
  s = List(list, &listed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token: 5000 bytes, at most 4096"));

  v1::WatchLifecycleRequest many;
  for (int i = 0; i < 1001; ++i) many.add_domain_names(absl::StrCat("n", i));
  s = RefusedWatch(many);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("at most 1000 each"));
  v1::WatchLifecycleRequest long_name;
  long_name.add_domain_names(huge);
  s = RefusedWatch(long_name);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(s.error_message().size(), 300u);
  v1::WatchLifecycleRequest epoch;
  epoch.set_resume_after_sequence(1);
  epoch.set_resume_epoch(std::string(65, 'e'));
  s = RefusedWatch(epoch);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("resume_epoch: 65 bytes, at most 64"));
  v1::WatchLifecycleRequest coalesce;
  coalesce.set_coalesce_ms(60001);
  s = RefusedWatch(coalesce);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("coalesce_ms must be at most 60000, got 60001"));
  v1::WatchLifecycleRequest uuid;
  uuid.add_domain_uuids("6695eb01-f6a4-8304-79aa-97f2502e193");  // a digit short
  s = RefusedWatch(uuid);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("malformed uuid"));
}

TEST_F(HypervisorServiceTest, WatchRejectsBadRequestsAtOnce) {
  v1::WatchLifecycleRequest bad_uuid;
  bad_uuid.add_domain_uuids("nope");
  EXPECT_EQ(RefusedWatch(bad_uuid).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::WatchLifecycleRequest bad_type;
  bad_type.add_event_types(v1::LIFECYCLE_EVENT_TYPE_UNSPECIFIED);
  EXPECT_EQ(RefusedWatch(bad_type).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::WatchLifecycleRequest foreign;
  foreign.set_resume_after_sequence(1);
  foreign.set_resume_epoch("another-server");
  grpc::Status s = RefusedWatch(foreign);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(s.error_message(), HasSubstr("epoch"));
  v1::WatchLifecycleRequest no_epoch;
  no_epoch.set_resume_after_sequence(3);
  EXPECT_EQ(RefusedWatch(no_epoch).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::WatchLifecycleRequest initial_and_resume;
  initial_and_resume.set_send_initial_state(true);
  initial_and_resume.set_resume_after_sequence(1);
  initial_and_resume.set_resume_epoch("x");
  EXPECT_EQ(RefusedWatch(initial_and_resume).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// The server takes WatchLifecycle's request as bytes and parses it itself
// (the method is registered raw): bytes that are no WatchLifecycleRequest
// end the call with INVALID_ARGUMENT and no message.
TEST_F(HypervisorServiceTest, WatchRejectsARequestThatDoesNotParse) {
  grpc::GenericStub generic(channel_);
  grpc::Slice garbage(std::string(11, '\xff'));  // a varint longer than ten bytes
  grpc::ByteBuffer request(&garbage, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  absl::Notification done;
  grpc::Status status;
  // Unary from the client's side: one request, then the status alone.
  generic.UnaryCall(&ctx, "/virtgate.v1.Hypervisor/WatchLifecycle", grpc::StubOptions(), &request,
                    &response, [&](grpc::Status s) {
                      status = std::move(s);
                      done.Notify();
                    });
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("does not parse"));
}

TEST_F(HypervisorServiceTest, FullWorkQueueIsResourceExhaustedAtOnce) {
  Server::Options o = TestDriverOptions();
  o.workers = 1;
  o.max_queued_calls = 0;
  std::unique_ptr<Server> server = StartServer(o);
  ASSERT_NE(server, nullptr);
  BusyWorker busy(server.get());
  ASSERT_TRUE(busy.ok());
  auto stub = StubFor(*server);
  grpc::ClientContext ctx;
  v1::ListDomainsResponse resp;
  grpc::Status s = stub->ListDomains(&ctx, {}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("server busy"));
  busy.Release();
  // Once the worker is free again, calls are admitted.
  ASSERT_TRUE(testing::WaitFor([&] { return server->workers()->GetStats().busy == 0; },
                               absl::Seconds(10)));
  grpc::ClientContext ctx2;
  EXPECT_TRUE(stub->ListDomains(&ctx2, {}, &resp).ok());
}

// The server ends a queued call at its own limit (--max_call_time): the
// client's deadline is a minute, or absent, so only the server can have
// ended these calls; the message says which limit it was.
TEST_F(HypervisorServiceTest, QueuedCallEndsAtTheServersLimit) {
  Server::Options o = TestDriverOptions();
  o.workers = 1;
  o.max_queued_calls = 4;
  o.max_call_time = absl::Milliseconds(300);
  std::unique_ptr<Server> server = StartServer(o);
  ASSERT_NE(server, nullptr);
  BusyWorker busy(server.get());
  ASSERT_TRUE(busy.ok());
  auto stub = StubFor(*server);
  for (const bool client_deadline : {true, false}) {
    SCOPED_TRACE(client_deadline ? "client deadline 60 s" : "no client deadline");
    grpc::ClientContext ctx;
    if (client_deadline) {
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    }
    v1::GetDomainRequest get;
    get.set_name("test");
    v1::Domain domain;
    grpc::Status s;
    {
      testing::CallWatchdog watchdog(&ctx, absl::Seconds(30));
      s = stub->GetDomain(&ctx, get, &domain);
    }
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("--max_call_time"));
  }
  busy.Release();
  // The expired calls were dropped unstarted: nothing is left queued or
  // running once the busy worker is released.
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        const WorkerPool::Stats stats = server->workers()->GetStats();
        return stats.busy == 0 && stats.queued == 0;
      },
      absl::Seconds(10)));
}

TEST_F(HypervisorServiceTest, UnreachableLibvirtIsUnavailableAndNotServing) {
  Server::Options o;
  o.libvirt_uri = "test+unix:///default?socket=/nonexistent/virtgate/libvirt-sock";
  std::unique_ptr<Server> server = StartServer(o);
  ASSERT_NE(server, nullptr);  // starts without libvirt
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Hypervisor::NewStub(channel);  // the channel is reused for health
  {
    grpc::ClientContext ctx;
    v1::ListDomainsResponse resp;
    grpc::Status s = stub->ListDomains(&ctx, {}, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(s.error_message(), HasSubstr("hypervisor unavailable"));
    EXPECT_THAT(s.error_message(), HasSubstr(o.libvirt_uri));
  }
  {
    grpc::ClientContext ctx;
    v1::Domain d;
    v1::GetDomainRequest req;
    req.set_name("test");
    EXPECT_EQ(stub->GetDomain(&ctx, req, &d).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  {
    grpc::ClientContext ctx;
    v1::HostInfo info;
    ASSERT_TRUE(stub->GetHostInfo(&ctx, {}, &info).ok());
    EXPECT_FALSE(info.connection().up());
    EXPECT_EQ(info.connection().connections_up(), 0u);
    EXPECT_THAT(info.connection().last_error(), HasSubstr("/nonexistent/virtgate/libvirt-sock"));
    EXPECT_EQ(info.uri(), o.libvirt_uri);
  }
  // The API is NOT_SERVING; the process ("", what a liveness probe asks)
  // is SERVING: restarting virtgated would not bring libvirt back.
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (const auto& [service, want] :
       {std::pair{"virtgate.v1.Hypervisor", grpc::health::v1::HealthCheckResponse::NOT_SERVING},
        std::pair{"", grpc::health::v1::HealthCheckResponse::SERVING}}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << service;
    EXPECT_EQ(resp.status(), want) << "service '" << service << "'";
  }
}

TEST_F(HypervisorServiceTest, PlaintextOnPublicAddressIsRefused) {
  Server::Options o = TestDriverOptions();
  o.listen = "0.0.0.0:0";
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(o);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--insecure"));
  EXPECT_TRUE(IsLoopbackOrUnix("unix:/run/x.sock"));
  EXPECT_TRUE(IsLoopbackOrUnix("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackOrUnix("[::1]:50051"));
  EXPECT_TRUE(IsLoopbackOrUnix("localhost:50051"));
  EXPECT_FALSE(IsLoopbackOrUnix("[::]:50051"));
  EXPECT_FALSE(IsLoopbackOrUnix("10.0.0.1:50051"));
  EXPECT_FALSE(IsLoopbackOrUnix("127.evil.example:50051"));
  EXPECT_TRUE(IsLoopbackOrUnix("127.0.0.2:0"));
}

// Shutdown: a health watcher hears NOT_SERVING at once (the watch stream
// itself is cut at the end of the grace period, so a NOT_SERVING read on it
// came before that); a call still queued behind a busy worker when the grace
// ends is cut off, and shutdown does not wait for the worker.
TEST_F(HypervisorServiceTest, ShutdownSaysNotServingAtOnceAndCutsQueuedCallsAtTheGrace) {
  Server::Options o = TestDriverOptions();
  o.workers = 1;
  std::unique_ptr<Server> server = StartServer(o);
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext health_ctx;
  health_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto updates = health->Watch(&health_ctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse update;
  ASSERT_TRUE(updates->Read(&update));
  ASSERT_EQ(update.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  BusyWorker busy(server.get());
  ASSERT_TRUE(busy.ok());
  auto stub = v1::Hypervisor::NewStub(channel);
  grpc::ClientContext ctx;
  v1::ListDomainsResponse resp;
  grpc::Status queued_status;
  absl::Notification done;
  v1::ListDomainsRequest req;
  stub->async()->ListDomains(&ctx, &req, &resp, [&](grpc::Status s) {
    queued_status = s;
    done.Notify();
  });
  // (EXPECT, not ASSERT, from here on: the call in flight refers to locals,
  // and the threads below must be joined.)
  EXPECT_TRUE(testing::WaitFor([&] { return server->workers()->GetStats().queued == 1; },
                               absl::Seconds(10)))
      << (done.HasBeenNotified() ? queued_status.error_message() : "call still open");
  std::thread releaser([&] {
    // The stuck task ends only after the grace period has cut the call off.
    done.WaitForNotification();
    busy.Release();
  });
  std::thread shutdown([&] { server->Shutdown(absl::Seconds(2)); });
  EXPECT_TRUE(updates->Read(&update)) << "the health watch ended without saying NOT_SERVING";
  EXPECT_EQ(update.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  shutdown.join();
  releaser.join();
  EXPECT_EQ(queued_status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << queued_status.error_message();
}

}  // namespace
}  // namespace virtgate
