// The event connection and the call connections do not wait for each other:
// with virtgated's event connection held in its registration (by a
// StallingProxy between virtgated and a real libvirtd), calls are served,
// health, GetHostInfo and reads say events are down, and everything comes
// back when it is released. At start-up, and after a libvirtd restart.
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/libvirt/handles.h"
#include "server/rpc/health_reporter.h"
#include "server/server.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/stalling_proxy.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "tests/support/watch_collector.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using testing::PrivateLibvirtd;
using testing::WaitFor;

class EventStallIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status started = testing::StartWithAdmin(&daemon_, &admin_);
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_TRUE(testing::DefineDomains(admin_.get(), "vm-", 20, 2).ok());
    const std::string socket = daemon_->uri().substr(daemon_->uri().find("socket=") + 7);
    const std::string proxied = socket.substr(0, socket.rfind('/')) + "/proxy-sock";
    absl::StatusOr<std::unique_ptr<testing::StallingProxy>> p =
        testing::StallingProxy::Start(socket, proxied);
    ASSERT_TRUE(p.ok()) << p.status();
    proxy_ = *std::move(p);
    uri_ = absl::StrCat("test+unix:///default?socket=", proxied);
  }
  void StartServer() {
    Server::Options o;
    o.libvirt_uri = uri_;
    o.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Hypervisor::NewStub(channel);
    health_ = grpc::health::v1::Health::NewStub(channel);
  }
  void TearDown() override {
    proxy_->Release();
    stub_.reset();
    server_.reset();
    proxy_.reset();
    admin_.reset();
  }

  bool Serving(const std::string& service) {
    grpc::ClientContext ctx;
    HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    return health_->Check(&ctx, req, &resp).ok() &&
           resp.status() == HealthCheckResponse::SERVING;
  }
  v1::HostInfo Host() {
    grpc::ClientContext ctx;
    v1::HostInfo info;
    EXPECT_TRUE(stub_->GetHostInfo(&ctx, {}, &info).ok());
    return info;
  }
  grpc::Status List(v1::ReadConsistency consistency, v1::ListDomainsResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListDomainsRequest req;
    req.set_page_size(5000);
    req.set_consistency(consistency);
    return stub_->ListDomains(&ctx, req, resp);
  }
  // Health, GetHostInfo and reads while the event connection is held, the
  // call connections up: calls served, events down, one story.
  void ExpectCallsServedEventsDown(size_t domains) {
    ASSERT_TRUE(WaitFor([&] { return Serving(v1::Hypervisor::service_full_name()); },
                        absl::Seconds(30)));
    EXPECT_TRUE(Serving(""));
    EXPECT_FALSE(Serving(kEventsHealthService));
    const v1::HostInfo host = Host();
    EXPECT_TRUE(host.connection().up());
    EXPECT_FALSE(host.connection().events_up());
    v1::ListDomainsResponse fresh;
    grpc::Status s = List(v1::READ_CONSISTENCY_FRESH, &fresh);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(fresh.epoch(), "") << "read from libvirt alone: not tied to a sequence";
    EXPECT_EQ(fresh.domains_size(), static_cast<int>(domains));
    absl::StatusOr<std::map<std::string, testing::TruthEntry>> truth =
        testing::GroundTruth(admin_.get());
    ASSERT_TRUE(truth.ok());
    for (const v1::Domain& d : fresh.domains()) {
      ASSERT_TRUE(truth->count(d.uuid())) << d.name();
      EXPECT_EQ(d.name(), truth->at(d.uuid()).name);
      EXPECT_FALSE(d.stale()) << d.name();
    }
  }

  std::unique_ptr<PrivateLibvirtd> daemon_;
  ConnectHandle admin_;
  std::unique_ptr<testing::StallingProxy> proxy_;
  std::string uri_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

TEST_F(EventStallIntegrationTest, CallsAreServedWhileTheEventConnectionIsHeldAtStartUp) {
  proxy_->HoldEventConnections();
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return proxy_->held() == 1; }, absl::Seconds(30)));
  ExpectCallsServedEventsDown(21);
  // Nothing is known to answer from, and no snapshot to send.
  v1::ListDomainsResponse cached;
  EXPECT_EQ(List(v1::READ_CONSISTENCY_CACHED, &cached).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  v1::WatchLifecycleRequest initial;
  initial.set_send_initial_state(true);
  testing::WatchCollector refused(stub_.get(), initial);
  std::optional<grpc::Status> end = refused.WaitForEnd(absl::Seconds(30));
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE) << end->error_message();

  proxy_->Release();
  ASSERT_TRUE(WaitFor([&] { return Serving(kEventsHealthService); }, absl::Seconds(30)));
  EXPECT_TRUE(Host().connection().events_up());
  v1::ListDomainsResponse fresh;
  ASSERT_TRUE(List(v1::READ_CONSISTENCY_FRESH, &fresh).ok());
  EXPECT_EQ(fresh.epoch(), server_->events()->epoch()) << "tied to a sequence again";
  EXPECT_EQ(fresh.domains_size(), 21);
}

// After libvirtd restarts, the event connection's re-listing is held: the
// call connections come back and serve regardless; CACHED reads answer
// with every domain stale; watches hear LOST, then RESTORED once released.
TEST_F(EventStallIntegrationTest, RestartedLibvirtdIsServedWhileTheEventResyncIsHeld) {
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Serving(kEventsHealthService); }, absl::Seconds(30)));
  testing::WatchCollector watch(stub_.get(), {});
  ASSERT_TRUE(WaitFor([&] { return server_->events()->subscriber_count() == 1; },
                      absl::Seconds(10)));
  proxy_->HoldEventConnections();
  admin_.reset();
  ASSERT_TRUE(daemon_->Restart().ok());
  admin_ = daemon_->Connect();
  ASSERT_TRUE(watch.WaitForMessage(
      [](const v1::WatchLifecycleResponse& m) {
        return m.has_connection() && m.connection().state() == v1::ConnectionChange::STATE_LOST;
      },
      absl::Seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return proxy_->held() == 1; }, absl::Seconds(60)))
      << "the event connection reconnected and is held in its registration";
  ExpectCallsServedEventsDown(1);  // the test driver's state died with libvirtd
  EXPECT_NE(Host().connection().events_error(), "");
  v1::ListDomainsResponse cached;
  ASSERT_TRUE(List(v1::READ_CONSISTENCY_CACHED, &cached).ok());
  EXPECT_EQ(cached.epoch(), server_->events()->epoch());
  EXPECT_EQ(cached.domains_size(), 21) << "what the cache knew before the restart";
  for (const v1::Domain& d : cached.domains()) EXPECT_TRUE(d.stale()) << d.name();

  proxy_->Release();
  ASSERT_TRUE(watch.WaitForMessage(
      [](const v1::WatchLifecycleResponse& m) {
        return m.has_connection() &&
               m.connection().state() == v1::ConnectionChange::STATE_RESTORED;
      },
      absl::Seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return Serving(kEventsHealthService); }, absl::Seconds(30)));
  const v1::HostInfo host = Host();
  EXPECT_TRUE(host.connection().events_up());
  EXPECT_EQ(host.connection().events_error(), "");
  EXPECT_EQ(host.connection().domains(), 1u) << "the catch-up took the cache to libvirt's state";
}

}  // namespace
}  // namespace virtgate
