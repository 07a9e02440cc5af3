#include "server/libvirt/worker_pool.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/support/wait_for.h"

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

// A stalled libvirtd holds workers forever; once their calls are past their
// deadline the pool stands in for them (up to the cap), and the extra
// threads go away when the stuck calls return.
TEST(WorkerPoolTest, ReplacesWorkersStuckPastTheirDeadlineUpToTheCap) {
  WorkerPool::Options options;
  options.threads = 2;
  options.max_queued = 10;
  options.max_replacements = 1;
  WorkerPool pool(options);
  auto release = std::make_shared<absl::Notification>();
  std::atomic<int> started{0};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(pool.Submit(
                        [release, &started](bool) {
                          ++started;
                          release->WaitForNotification();  // stuck in libvirt
                        },
                        absl::Now() + absl::Milliseconds(50))
                    .ok());
  }
  ASSERT_TRUE(WaitFor([&] { return started == 2; }, absl::Seconds(10)));
  // New work while both are stuck: one replacement runs it, the cap holds.
  std::atomic<int> ran{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pool.Submit([&](bool cancelled) { ran += cancelled ? 0 : 1; }).ok());
  }
  EXPECT_TRUE(WaitFor([&] { return ran == 3; }, absl::Seconds(10)));
  WorkerPool::Stats stats = pool.GetStats();
  EXPECT_EQ(stats.stuck, 2);
  EXPECT_EQ(stats.replacements, 1);
  EXPECT_EQ(stats.threads, 3);
  EXPECT_EQ(stats.replacements_started, 1u);
  // The stuck calls return: back to the configured size.
  release->Notify();
  EXPECT_TRUE(WaitFor([&] { return pool.GetStats().threads == 2; }, absl::Seconds(10)))
      << pool.GetStats().threads;
  EXPECT_EQ(pool.GetStats().stuck, 0);
  EXPECT_EQ(pool.Shutdown(absl::Now() + absl::Seconds(5)), 0);
}

// Busy but not past their deadlines: no replacements (that would only add
// load to a slow libvirtd).
TEST(WorkerPoolTest, BusyWorkersWithinTheirDeadlineAreNotReplaced) {
  WorkerPool::Options options;
  options.threads = 1;
  options.max_queued = 10;
  WorkerPool pool(options);
  absl::Notification release, started;
  ASSERT_TRUE(pool.Submit(
                      [&](bool) {
                        started.Notify();
                        release.WaitForNotification();
                      },
                      absl::Now() + absl::Hours(1))
                  .ok());
  started.WaitForNotification();
  std::atomic<int> ran{0};
  ASSERT_TRUE(pool.Submit([&](bool) { ++ran; }).ok());
  // The supervisor looks every 100 ms while work waits; give it several looks.
  EXPECT_FALSE(WaitFor([&] { return ran > 0 || pool.GetStats().threads > 1; },
                       absl::Milliseconds(500)));
  EXPECT_EQ(pool.GetStats().stuck, 0);
  release.Notify();
  EXPECT_TRUE(WaitFor([&] { return ran == 1; }, absl::Seconds(10)));
  EXPECT_EQ(pool.Shutdown(absl::Now() + absl::Seconds(5)), 0);
}

}  // namespace
}  // namespace virtgate
