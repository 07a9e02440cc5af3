// The limits on what one client may hold, against an in-process virtgated
// on test:///default, each with the error a client gets (issue 12 items 4
// and 7): request size, open watches per client and in total, streams per
// connection, idle connections, and HTTP/2 pings too often.
#include <arpa/inet.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/libvirt/event_loop.h"
#include "server/server.h"
#include "tests/support/loopback.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using testing::HasIpv6Loopback;

using ::testing::HasSubstr;
using testing::WaitFor;

std::chrono::system_clock::time_point In(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

Server::Options TestDriverOptions() {
  Server::Options o;
  o.libvirt_uri = "test:///default";
  o.listen = "127.0.0.1:0";
  return o;
}

// A channel on a connection of its own (gRPC shares one between channels
// with equal arguments otherwise), with `args` set too.
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& target,
                                          grpc::ChannelArguments args = {}) {
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// An open watch, served: its first message (the initial state of the test
// driver's domain) has arrived. Cancelled when destroyed.
class OpenWatch {
 public:
  explicit OpenWatch(v1::Hypervisor::Stub* stub) {
    ctx_.set_deadline(In(absl::Seconds(60)));
    v1::WatchLifecycleRequest req;
    req.set_send_initial_state(true);
    reader_ = stub->WatchLifecycle(&ctx_, req);
    v1::WatchLifecycleResponse first;
    open_ = reader_->Read(&first) && first.has_initial();
    if (!open_) status_ = reader_->Finish();
  }
  ~OpenWatch() { Close(); }
  void Close() {
    if (!open_) return;
    open_ = false;
    ctx_.TryCancel();
    v1::WatchLifecycleResponse m;
    while (reader_->Read(&m)) {
    }
    status_ = reader_->Finish();
  }
  bool open() const { return open_; }
  // Why it did not open (or how it ended).
  const grpc::Status& status() const { return status_; }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::WatchLifecycleResponse>> reader_;
  bool open_ = false;
  grpc::Status status_;
};

class LimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(EnsureLibvirtEventLoop().ok());
    // Keeps test:///default's domains for the whole suite.
    admin_ = virConnectOpen("test:///default");
    ASSERT_NE(admin_, nullptr);
  }
  static void TearDownTestSuite() { virConnectClose(admin_); }

  void Start(Server::Options options) {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  std::unique_ptr<v1::Hypervisor::Stub> Stub(const std::string& target,
                                             grpc::ChannelArguments args = {}) {
    return v1::Hypervisor::NewStub(OwnChannel(target, std::move(args)));
  }
  grpc::Status HostInfo(v1::Hypervisor::Stub* stub, absl::Duration deadline,
                        v1::HostInfo* info = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(deadline));
    v1::HostInfo ignored;
    return stub->GetHostInfo(&ctx, {}, info != nullptr ? info : &ignored);
  }

  static virConnectPtr admin_;
  std::unique_ptr<Server> server_;
};

virConnectPtr LimitsTest::admin_ = nullptr;

TEST_F(LimitsTest, ARequestOverMaxRequestBytesIsRefusedByGrpcNamingTheSize) {
  Server::Options o = TestDriverOptions();
  o.connection_limits.max_request_bytes = 8192;
  Start(o);
  auto stub = Stub(server_->address());
  v1::GetDomainRequest req;
  req.set_name(std::string(10000, 'x'));
  grpc::ClientContext ctx;
  ctx.set_deadline(In(absl::Seconds(30)));
  v1::Domain d;
  grpc::Status s = stub->GetDomain(&ctx, req, &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("larger than max"));
  EXPECT_THAT(s.error_message(), HasSubstr("8192"));

  // Under the limit, the request reaches the server's own checks.
  req.set_name(std::string(8000, 'x'));
  grpc::ClientContext ctx2;
  ctx2.set_deadline(In(absl::Seconds(30)));
  s = stub->GetDomain(&ctx2, req, &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("is longer than 1024 bytes"));
}

TEST_F(LimitsTest, TheDefaultRequestLimitIs64KiB) {
  Start(TestDriverOptions());
  auto stub = Stub(server_->address());
  v1::WatchLifecycleRequest req;  // the biggest request there is: a full filter
  for (int i = 0; i < 1000; ++i) req.add_domain_uuids("6695eb01-f6a4-8304-79aa-97f2502e193f");
  req.add_domain_names(std::string(65536 - req.ByteSizeLong(), 'n'));  // over by a few bytes
  grpc::ClientContext ctx;
  ctx.set_deadline(In(absl::Seconds(30)));
  auto reader = stub->WatchLifecycle(&ctx, req);
  v1::WatchLifecycleResponse m;
  EXPECT_FALSE(reader->Read(&m));
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("65536"));
}

// Listening on every address, a client on 127.0.0.1 and one on [::1] are
// two peers (a loopback address other than 127.0.0.1 still connects from
// 127.0.0.1). Each watch here gets its own connection: the limit is per
// address, not per connection.
TEST_F(LimitsTest, WatchesAreLimitedPerClientAndInTotal) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "needs the IPv6 loopback [::1] for a second client";
  Server::Options o = TestDriverOptions();
  o.listen = "[::]:0";
  o.insecure = true;
  o.watch_limits = {/*max_watches=*/5, /*max_watches_per_peer=*/3};
  Start(o);
  const std::string v4 = absl::StrCat("127.0.0.1:", server_->port());
  const std::string v6 = absl::StrCat("[::1]:", server_->port());
  std::vector<std::unique_ptr<v1::Hypervisor::Stub>> stubs;
  std::vector<std::unique_ptr<OpenWatch>> watches;
  auto open = [&](const std::string& target) {
    stubs.push_back(Stub(target));
    watches.push_back(std::make_unique<OpenWatch>(stubs.back().get()));
    return watches.back().get();
  };
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(open(v4)->open()) << watches.back()->status().error_message();
  }
  OpenWatch* fourth = open(v4);
  ASSERT_FALSE(fourth->open());
  EXPECT_EQ(fourth->status().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(fourth->status().error_message(),
              HasSubstr("client ipv4:127.0.0.1 already has 3 open, the limit "
                        "(--max_watches_per_peer)"));

  // Another client is still served, up to the server's total.
  ASSERT_TRUE(open(v6)->open()) << watches.back()->status().error_message();
  ASSERT_TRUE(open(v6)->open()) << watches.back()->status().error_message();
  OpenWatch* sixth = open(v6);
  ASSERT_FALSE(sixth->open());
  EXPECT_EQ(sixth->status().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(sixth->status().error_message(),
              HasSubstr("the server already has 5 open, the limit (--max_watches)"));
  v1::HostInfo info;
  ASSERT_TRUE(HostInfo(stubs.back().get(), absl::Seconds(30), &info).ok());
  EXPECT_EQ(info.connection().open_watches(), 5u);

  // A watch that ends gives its place back.
  watches[0]->Close();
  ASSERT_TRUE(WaitFor([&] { return server_->service()->open_watches() == 4; }, absl::Seconds(30)));
  EXPECT_TRUE(open(v4)->open()) << watches.back()->status().error_message();
}

TEST_F(LimitsTest, AConnectionCarriesAtMostMaxStreamsCallsAtOnce) {
  Server::Options o = TestDriverOptions();
  o.connection_limits.max_streams_per_connection = 2;
  Start(o);
  auto stub = Stub(server_->address());
  auto first = std::make_unique<OpenWatch>(stub.get());
  OpenWatch second(stub.get());
  ASSERT_TRUE(first->open() && second.open());
  // A third call on that connection waits for one of them to end (gRPC's
  // client queues it): this one never gets its turn.
  grpc::Status s = HostInfo(stub.get(), absl::Seconds(2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  // Other connections are not held up.
  auto other = Stub(server_->address());
  EXPECT_TRUE(HostInfo(other.get(), absl::Seconds(30)).ok());
  first.reset();
  EXPECT_TRUE(HostInfo(stub.get(), absl::Seconds(30)).ok());
}

TEST_F(LimitsTest, AConnectionWithNoCallOpenIsClosedAfterMaxConnectionIdle) {
  Server::Options o = TestDriverOptions();
  o.connection_limits.max_connection_idle = absl::Milliseconds(500);
  Start(o);
  auto watching_channel = OwnChannel(server_->address());
  auto watching = v1::Hypervisor::NewStub(watching_channel);
  OpenWatch watch(watching.get());
  ASSERT_TRUE(watch.open());
  auto idle_channel = OwnChannel(server_->address());
  auto idle = v1::Hypervisor::NewStub(idle_channel);
  ASSERT_TRUE(HostInfo(idle.get(), absl::Seconds(30)).ok());
  // The server's GOAWAY takes the idle connection down...
  EXPECT_TRUE(WaitFor([&] { return idle_channel->GetState(false) != GRPC_CHANNEL_READY; },
                      absl::Seconds(30)));
  // ...but not the one with a watch open, idle for longer.
  EXPECT_EQ(watching_channel->GetState(false), GRPC_CHANNEL_READY);
  EXPECT_TRUE(HostInfo(watching.get(), absl::Seconds(30)).ok());
  // The next call on the idle channel reconnects.
  EXPECT_TRUE(HostInfo(idle.get(), absl::Seconds(30)).ok());
}

// gRPC's client logs the GOAWAY it gets for pinging too often; the test
// hears it through gRPC's log hook (and passes every line on to stderr).
absl::Notification* too_many_pings = nullptr;

void HearGrpcLog(gpr_log_func_args* args) {
  fprintf(stderr, "grpc %s:%d %s\n", args->file, args->line, args->message);
  if (too_many_pings != nullptr && absl::StrContains(args->message, "too_many_pings") &&
      !too_many_pings->HasBeenNotified()) {
    too_many_pings->Notify();
  }
}

TEST_F(LimitsTest, AClientPingingEverySecondGetsGoawayTooManyPings) {
  Start(TestDriverOptions());
  absl::Notification heard;
  too_many_pings = &heard;
  gpr_set_log_function(HearGrpcLog);
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 100);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // no cap on the client's side
  auto channel = OwnChannel(server_->address(), args);
  auto stub = v1::Hypervisor::NewStub(channel);
  ASSERT_TRUE(HostInfo(stub.get(), absl::Seconds(30)).ok());
  // Two pings within 10 s are strikes; the third is the end.
  EXPECT_TRUE(heard.WaitForNotificationWithTimeout(absl::Seconds(60)))
      << "no GOAWAY too_many_pings for a client pinging every second";
  EXPECT_TRUE(WaitFor([&] { return channel->GetState(false) != GRPC_CHANNEL_READY; },
                      absl::Seconds(30)));
  too_many_pings = nullptr;
}

}  // namespace
}  // namespace virtgate
