#include "server/worker_pool.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/support/libvirtd_fixture.h"

namespace virtgate {
namespace {

using testing::WaitFor;

TEST(WorkerPoolTest, RunsEveryTaskOnAWorker) {
  WorkerPool pool({/*threads=*/4, /*max_queued=*/100});
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(pool.Submit([&](bool cancelled) {
                      EXPECT_FALSE(cancelled);
                      ++ran;
                    }).ok());
  }
  EXPECT_TRUE(WaitFor([&] { return ran == 100; }, absl::Seconds(10)));
  EXPECT_EQ(pool.Shutdown(absl::Now() + absl::Seconds(5)), 0);
}

TEST(WorkerPoolTest, FullQueueIsResourceExhaustedAtOnce) {
  WorkerPool pool({/*threads=*/2, /*max_queued=*/3});
  absl::Notification release;
  std::atomic<int> started{0};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(pool.Submit([&](bool) {
                      ++started;
                      release.WaitForNotification();
                    }).ok());
  }
  ASSERT_TRUE(WaitFor([&] { return started == 2; }, absl::Seconds(10)));
  std::atomic<int> queued_ran{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pool.Submit([&](bool cancelled) { queued_ran += cancelled ? 0 : 1; }).ok());
  }
  const absl::Time before = absl::Now();
  absl::Status full = pool.Submit([](bool) { FAIL() << "must not run"; });
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(100)) << "a full queue must not block";
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("max_queued_calls"), absl::string_view::npos) << full;
  EXPECT_EQ(pool.GetStats().rejected, 1u);
  EXPECT_EQ(pool.GetStats().queued, 3);
  release.Notify();
  EXPECT_TRUE(WaitFor([&] { return queued_ran == 3; }, absl::Seconds(10)));
}

TEST(WorkerPoolTest, ShutdownCancelsQueuedTasksExactlyOnce) {
  WorkerPool pool({/*threads=*/1, /*max_queued=*/10});
  absl::Notification release, started;
  ASSERT_TRUE(pool.Submit([&](bool) {
                    started.Notify();
                    release.WaitForNotification();
                  }).ok());
  started.WaitForNotification();
  std::atomic<int> cancelled{0}, ran{0};
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(pool.Submit([&](bool c) { (c ? cancelled : ran)++; }).ok());
  }
  std::thread releaser([&] {
    // Let Shutdown take the queue first, then let the running task end.
    WaitFor([&] { return cancelled == 5; }, absl::Seconds(10));
    release.Notify();
  });
  EXPECT_EQ(pool.Shutdown(absl::Now() + absl::Seconds(10)), 0);
  releaser.join();
  EXPECT_EQ(cancelled, 5);
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(pool.Submit([](bool) {}).code(), absl::StatusCode::kUnavailable);
}

TEST(WorkerPoolTest, ShutdownAbandonsAStuckWorkerAtTheDeadline) {
  auto release = std::make_shared<absl::Notification>();
  std::atomic<bool> started{false};
  {
    WorkerPool pool({/*threads=*/2, /*max_queued=*/10});
    ASSERT_TRUE(pool.Submit([release, &started](bool) {
                      started = true;
                      release->WaitForNotification();  // a call into a stopped libvirtd
                    }).ok());
    ASSERT_TRUE(WaitFor([&] { return started.load(); }, absl::Seconds(10)));
    const absl::Time before = absl::Now();
    EXPECT_EQ(pool.Shutdown(absl::Now() + absl::Milliseconds(200)), 1);
    EXPECT_LT(absl::Now() - before, absl::Seconds(2));
  }  // the pool is gone; the abandoned worker still holds its state
  release->Notify();
}

}  // namespace
}  // namespace virtgate
