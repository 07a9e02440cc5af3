// The client library's WatchLifecycle resuming in the same epoch: nothing
// lost, nothing repeated.
//
// - Against a server that replays more than it was asked for (a fake: no
//   real virtgated does; it stands for a buggy or older server), the
//   library drops what it already delivered.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr absl::Duration kWait = absl::Seconds(30);

// What a WatchLifecycle call delivered, for assertions; thread-safe.
class Delivered {
 public:
  WatchCallbacks Callbacks() {
    WatchCallbacks cb;
    cb.on_message = [this](const v1::WatchLifecycleResponse& m) {
      std::lock_guard<std::mutex> lock(mu_);
      messages_.push_back(m);
      changed_.notify_all();
    };
    cb.on_resync = [this](const std::string& why) {
      std::lock_guard<std::mutex> lock(mu_);
      resyncs_.push_back(why);
    };
    cb.on_retry = [this](const absl::Status& why, absl::Duration) {
      std::lock_guard<std::mutex> lock(mu_);
      retries_.push_back(why);
    };
    return cb;
  }
  // Waits until an event or connection change with `sequence` arrived.
  bool WaitForSequence(uint64_t sequence, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] {
      return !messages_.empty() && messages_.back().sequence() >= sequence;
    });
  }
  std::vector<uint64_t> Sequences() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint64_t> out;
    for (const auto& m : messages_) out.push_back(m.sequence());
    return out;
  }
  std::vector<std::string> Resyncs() {
    std::lock_guard<std::mutex> lock(mu_);
    return resyncs_;
  }
  std::vector<absl::Status> Retries() {
    std::lock_guard<std::mutex> lock(mu_);
    return retries_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<v1::WatchLifecycleResponse> messages_;
  std::vector<std::string> resyncs_;
  std::vector<absl::Status> retries_;
};

// A fake, for what no real virtgated does: on a resumed watch it replays
// from two events before the resume point. Its first stream sends events 1
// to 5 and ends UNAVAILABLE (a dropped connection); every later one sends
// 3 to 8 and stays open until the client cancels.
class FakeReplayingServer final : public v1::Hypervisor::Service {
 public:
  static constexpr char kEpoch[] = "fake-epoch";

  grpc::Status WatchLifecycle(grpc::ServerContext* ctx, const v1::WatchLifecycleRequest* request,
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
    while (!ctx->IsCancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // poll interval
    }
    return grpc::Status::CANCELLED;
  }

  std::vector<v1::WatchLifecycleRequest> Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  std::mutex mu_;
  std::vector<v1::WatchLifecycleRequest> requests_;
};

TEST(ClientResumeTest, ReplayedEventsAreDeliveredOnce) {
  FakeReplayingServer fake;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&fake);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(client.ok()) << client.status();
  Delivered delivered;
  WatchSession session;
  absl::Status result;
  std::thread watch([&] {
    result = (*client)->WatchLifecycle(v1::WatchLifecycleRequest(), delivered.Callbacks(), &session);
  });
  const bool got_all = delivered.WaitForSequence(8, kWait);
  session.Cancel();
  watch.join();
  server->Shutdown();
  ASSERT_TRUE(got_all) << "delivered: " << ::testing::PrintToString(delivered.Sequences());
  EXPECT_TRUE(result.ok()) << result;

  EXPECT_THAT(delivered.Sequences(), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(delivered.Resyncs(), IsEmpty());
  ASSERT_EQ(delivered.Retries().size(), 1u);
  EXPECT_EQ(delivered.Retries()[0].code(), absl::StatusCode::kUnavailable)
      << delivered.Retries()[0];
  const std::vector<v1::WatchLifecycleRequest> requests = fake.Requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].resume_after_sequence(), 5u);
  EXPECT_EQ(requests[1].resume_epoch(), FakeReplayingServer::kEpoch);
}

}  // namespace
}  // namespace virtgate
