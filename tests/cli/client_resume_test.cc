// The client library's WatchLifecycle resuming in the same epoch: nothing
// lost, nothing repeated.
//
// - Against a real virtgated (on a private libvirtd) whose connection is
//   dropped and refused for a while, and which cuts off a watcher that fell
//   behind (RESOURCE_EXHAUSTED): the library resumes after the last sequence
//   it delivered, the server replays the rest, and every sequence arrives
//   once, with no re-listing.
// - Against a server that replays more than it was asked for (a fake: no
//   real virtgated does; it stands for a buggy or older server), the
//   library drops what it already delivered.
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/stalling_proxy.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"
#include "tests/support/watch_recorder.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr absl::Duration kWait = absl::Seconds(30);

using Recorder = testing::WatchRecorder;

std::vector<uint64_t> Sequences(Recorder& r) {
  return r.With([](const Recorder::State& s) {
    std::vector<uint64_t> out;
    for (const auto& m : s.messages) out.push_back(m.sequence());
    return out;
  });
}
std::vector<v1::WatchLifecycleResponse> Messages(Recorder& r) {
  return r.With([](const Recorder::State& s) { return s.messages; });
}
std::vector<std::string> Resyncs(Recorder& r) {
  return r.With([](const Recorder::State& s) {
    std::vector<std::string> out;
    for (const auto& x : s.resyncs) out.push_back(x.why);
    return out;
  });
}
std::vector<absl::Status> Retries(Recorder& r) {
  return r.With([](const Recorder::State& s) {
    std::vector<absl::Status> out;
    for (const auto& x : s.retries) out.push_back(x.why);
    return out;
  });
}

// A fake, for what no real virtgated does: on a resumed watch it replays
// from two events before the resume point. Its first stream sends events 1
// to 5 and ends UNAVAILABLE (a dropped connection); every later one sends
// 3 to 8 and stays open until Release() (the test releases it once the
// client has cancelled, and before the server shuts down).
class FakeReplayingServer final : public v1::Hypervisor::Service {
 public:
  static constexpr char kEpoch[] = "fake-epoch";

  grpc::Status WatchLifecycle(grpc::ServerContext*, const v1::WatchLifecycleRequest* request,
                              grpc::ServerWriter<v1::WatchLifecycleResponse>* writer) override {
    int attempt;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(*request);
      attempt = static_cast<int>(requests_.size());
    }
    const uint64_t first = attempt == 1 ? 1 : 3, last = attempt == 1 ? 5 : 8;
    for (uint64_t seq = first; seq <= last; ++seq) {
      v1::WatchLifecycleResponse m;
      m.set_sequence(seq);
      m.set_epoch(kEpoch);
      m.mutable_event()->set_domain_name(absl::StrCat("fake-", seq));
      m.mutable_event()->set_type(v1::LIFECYCLE_EVENT_TYPE_DEFINED);
      if (!writer->Write(m)) return grpc::Status::CANCELLED;
    }
    if (attempt == 1) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake: connection dropped");
    release_.WaitForNotification();
    return grpc::Status::CANCELLED;
  }

  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }

  std::vector<v1::WatchLifecycleRequest> Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  std::mutex mu_;
  std::vector<v1::WatchLifecycleRequest> requests_;
  absl::Notification release_;
};

TEST(ClientResumeTest, ReplayedEventsAreDeliveredOnce) {
  FakeReplayingServer fake;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&fake);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  // However the test ends, the open stream is released before the server
  // shuts down (which waits for it).
  struct ReleaseFirst {
    FakeReplayingServer& fake;
    ~ReleaseFirst() { fake.Release(); }
  } release_first{fake};
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<uint64_t> sequences;
  std::vector<std::string> resyncs;
  std::vector<absl::Status> retries;
  {
    Recorder delivered;
    delivered.Start(**client, v1::WatchLifecycleRequest());
    const bool got_all = delivered.WaitForSequence(8, kWait);
    delivered.session().Cancel();
    ASSERT_TRUE(delivered.WaitUntil([](const Recorder::State& s) { return s.result.has_value(); },
                                    kWait));
    EXPECT_TRUE(delivered.With([](const Recorder::State& s) { return *s.result; }).ok());
    sequences = Sequences(delivered);
    resyncs = Resyncs(delivered);
    retries = Retries(delivered);
    ASSERT_TRUE(got_all) << "delivered: " << ::testing::PrintToString(sequences);
  }
  fake.Release();
  server->Shutdown();

  EXPECT_THAT(sequences, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(resyncs, IsEmpty());
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(retries[0].code(), absl::StatusCode::kUnavailable) << retries[0];
  const std::vector<v1::WatchLifecycleRequest> requests = fake.Requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].resume_after_sequence(), 5u);
  EXPECT_EQ(requests[1].resume_epoch(), FakeReplayingServer::kEpoch);
}

// ---------------------------------------------------------------------------
// Against the real virtgated, on a private libvirtd whose changes come from
// this test's own libvirt connection.

class ClientResumeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::PrivateLibvirtd>> d = testing::PrivateLibvirtd::Start();
    if (d.status().code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << d.status();
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    admin_ = virConnectOpen(daemon_->uri().c_str());
    ASSERT_NE(admin_, nullptr);
  }
  void TearDown() override {
    if (admin_ != nullptr) virConnectClose(admin_);
  }
  void StartServer(std::vector<std::string> flags) {
    testing::ServerProcess::Config config;
    config.libvirt_uri = daemon_->uri();
    config.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<testing::ServerProcess>> s =
        testing::ServerProcess::Start(std::move(config));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  // Defines (and, if `undefine`, undefines) `name`: one or two events.
  void Define(const std::string& name, bool undefine = false) {
    virDomainPtr d = virDomainDefineXML(admin_, testing::TestDomainXml(name).c_str());
    ASSERT_NE(d, nullptr) << name;
    if (undefine) {
      EXPECT_EQ(virDomainUndefine(d), 0) << name;
    }
    virDomainFree(d);
  }
  // The server's last published sequence (GetHostInfo, from memory).
  uint64_t LastSequence() {
    grpc::ClientContext ctx;
    ctx.set_deadline(testing::DeadlineIn(absl::Seconds(5)));
    v1::HostInfo info;
    return server_->stub()->GetHostInfo(&ctx, {}, &info).ok() ? info.connection().last_sequence()
                                                               : 0;
  }

  std::unique_ptr<testing::PrivateLibvirtd> daemon_;
  virConnectPtr admin_ = nullptr;
  std::unique_ptr<testing::ServerProcess> server_;
};

// Every delivered event or connection change has the next sequence of one
// epoch: nothing lost, nothing repeated.
void ExpectConsecutive(const std::vector<v1::WatchLifecycleResponse>& ms) {
  ASSERT_FALSE(ms.empty());
  for (size_t i = 1; i < ms.size(); ++i) {
    ASSERT_EQ(ms[i].epoch(), ms[0].epoch()) << "message " << i;
    ASSERT_EQ(ms[i].sequence(), ms[i - 1].sequence() + 1) << "message " << i;
  }
}

// The connection is cut (a fake wire between client and server: the only
// way to drop a connection on demand) and refused for a while; events
// published meanwhile arrive after the resume, in the same epoch.
TEST_F(ClientResumeServerTest, ResumesAfterADroppedConnection) {
  ASSERT_NO_FATAL_FAILURE(StartServer({}));
  testing::TempDir dir("vgresume");
  const std::string server_path = server_->target().substr(std::string("unix:").size());
  absl::StatusOr<std::unique_ptr<testing::StallingProxy>> proxy =
      testing::StallingProxy::StartPlain(server_path, dir.path() + "/proxy.sock");
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  ClientOptions options;
  options.watch_max_backoff = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect("unix:" + dir.path() + "/proxy.sock", options);
  ASSERT_TRUE(client.ok()) << client.status();

  Recorder delivered;
  delivered.Start(**client, v1::WatchLifecycleRequest());
  // Live: an event goes through the proxy.
  ASSERT_TRUE(testing::WaitFor([&] {
    Define("before", true);
    return delivered.WaitForSequence(LastSequence(), absl::Milliseconds(200));
  }, kWait));

  (*proxy)->Refuse(true);
  (*proxy)->DropAll();
  const size_t retries = Retries(delivered).size();
  const uint64_t before = LastSequence();
  for (int i = 0; i < 10; ++i) Define(absl::StrCat("during-", i), true);
  // Events reach the server after the calls return: wait until all 20
  // (defined, undefined) are published while the client is cut off.
  uint64_t during = 0;
  ASSERT_TRUE(testing::WaitFor([&] { return (during = LastSequence()) >= before + 20; }, kWait))
      << "published up to " << during << ", want " << before + 20;
  // The client has noticed, and failed to get back in, at least once.
  ASSERT_TRUE(delivered.WaitUntil(
      [&](const Recorder::State& s) { return s.retries.size() >= retries + 2; }, kWait));
  (*proxy)->Refuse(false);
  Define("after");
  uint64_t after = 0;
  ASSERT_TRUE(testing::WaitFor([&] { return (after = LastSequence()) > during; }, kWait));
  ASSERT_TRUE(delivered.WaitForSequence(after, kWait))
      << "delivered up to " << Sequences(delivered).back() << " of " << after;

  const std::vector<v1::WatchLifecycleResponse> ms = Messages(delivered);
  ExpectConsecutive(ms);
  EXPECT_THAT(Resyncs(delivered), IsEmpty()) << "the same epoch resumes, never re-lists";
  EXPECT_GE(ms.back().sequence(), during + 1);
  for (const absl::Status& why : Retries(delivered)) {
    EXPECT_EQ(why.code(), absl::StatusCode::kUnavailable) << why;
  }
}

// A watcher whose callback blocks falls behind; the server cuts it off
// (RESOURCE_EXHAUSTED) and the library resumes from where it got to.
TEST_F(ClientResumeServerTest, ResumesAfterFallingBehind) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--watch_queue_depth=16"}));
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server_->target());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Notification release;
  struct Release {
    absl::Notification& r;
    ~Release() {
      if (!r.HasBeenNotified()) r.Notify();
    }
  };
  Recorder delivered;  // destroyed (cancelled, joined) after `released`
  Release released{release};
  WatchCallbacks blocking = delivered.Callbacks();
  blocking.on_message = [&, record = blocking.on_message](const v1::WatchLifecycleResponse& m) {
    record(m);
    release.WaitForNotification();  // the first message holds the stream
  };
  delivered.Start(**client, v1::WatchLifecycleRequest(), blocking);
  ASSERT_TRUE(testing::WaitFor([&] {
    Define("first", true);
    return !Sequences(delivered).empty();
  }, kWait));
  // Far more than the queue and gRPC's flow-control window hold.
  constexpr int kPairs = 2000;
  for (int i = 0; i < kPairs; ++i) Define(absl::StrFormat("burst-%04d", i), true);
  const uint64_t last = LastSequence();
  release.Notify();
  ASSERT_TRUE(delivered.WaitForSequence(last, kWait))
      << "delivered up to " << Sequences(delivered).back() << " of " << last;
  ExpectConsecutive(Messages(delivered));
  EXPECT_THAT(Resyncs(delivered), IsEmpty()) << "history (10,000) reaches back: resume";
  bool fell_behind = false;
  for (const absl::Status& why : Retries(delivered)) {
    fell_behind = fell_behind || why.code() == absl::StatusCode::kResourceExhausted;
  }
  EXPECT_TRUE(fell_behind) << "the server never cut the slow watcher off";
}

}  // namespace
}  // namespace virtgate
