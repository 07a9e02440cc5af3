#include "server/state/event_hub.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/wait_for.h"

namespace virtgate {
namespace {

bool testing_internal_wait(const std::function<bool()>& cond) {
  return testing::WaitFor(cond, absl::Seconds(10));
}

v1::WatchLifecycleResponse Event(const std::string& name, v1::LifecycleEventType type) {
  v1::WatchLifecycleResponse m;
  m.mutable_event()->set_domain_name(name);
  m.mutable_event()->set_domain_uuid("uuid-" + name);
  m.mutable_event()->set_type(type);
  return m;
}

std::vector<uint64_t> Sequences(const std::vector<EventHub::Message>& ms) {
  std::vector<uint64_t> out;
  for (const auto& m : ms) out.push_back(m->sequence());
  return out;
}

// Wakes run on the hub's notifier thread: wait for them, with a deadline.
bool WaitForWakes(const std::atomic<int>& wakes, int n) {
  return testing_internal_wait([&] { return wakes.load() >= n; });
}

TEST(EventHubTest, StampsGapFreeSequencesEpochAndTime) {
  EventHub hub({}, "epoch-1");
  std::atomic<int> wakes{0};
  auto sub = hub.Subscribe({}, std::nullopt, "", [&] { ++wakes; });
  ASSERT_TRUE(sub.ok());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED)), uint64_t(i + 1));
  }
  ASSERT_TRUE(WaitForWakes(wakes, 1));
  std::vector<EventHub::Message> got = (*sub)->Drain(100);
  EXPECT_EQ(Sequences(got), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  for (const auto& m : got) {
    EXPECT_EQ(m->epoch(), "epoch-1");
    EXPECT_GT(m->time().seconds(), 0);
  }
  // Coalesced: at least one wake, at most one per message.
  EXPECT_GE(wakes, 1);
  EXPECT_LE(wakes, 5);
  EXPECT_EQ((*sub)->last_taken(), 5u);
  EXPECT_EQ(hub.last_sequence(), 5u);
}

TEST(EventHubTest, EpochsAreRandom) {
  EXPECT_NE(EventHub::NewEpoch(), EventHub::NewEpoch());
  EXPECT_EQ(EventHub::NewEpoch().size(), 32u);
}

TEST(EventHubTest, ResumeWithinHistoryReplaysExactlyTheMissedEvents) {
  EventHub hub({/*history=*/10, /*queue_depth=*/4}, "e");
  for (int i = 0; i < 8; ++i) hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED));
  auto sub = hub.Subscribe({}, /*resume_after=*/3, "e", [] {});
  ASSERT_TRUE(sub.ok()) << sub.status();
  hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED));  // 9: live, after the replay
  // 5 replayed messages do not count against the depth of 4.
  EXPECT_FALSE((*sub)->overflowed());
  EXPECT_EQ(Sequences((*sub)->Drain(100)), (std::vector<uint64_t>{4, 5, 6, 7, 8, 9}));
}

TEST(EventHubTest, ResumeOutsideHistoryOrEpochIsOutOfRange) {
  EventHub hub({/*history=*/3, /*queue_depth=*/16}, "e");
  for (int i = 0; i < 10; ++i) hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED));
  // History holds 8, 9, 10: resuming after 7 works, after 6 does not.
  EXPECT_TRUE(hub.Subscribe({}, 7, "e", [] {}).ok());
  absl::StatusOr<std::shared_ptr<EventHub::Subscriber>> old = hub.Subscribe({}, 6, "e", [] {});
  EXPECT_EQ(old.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(old.status().message().find("older than the history"), absl::string_view::npos);
  auto foreign = hub.Subscribe({}, 9, "other-epoch", [] {});
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(foreign.status().message().find("epoch"), absl::string_view::npos);
  EXPECT_EQ(hub.Subscribe({}, 11, "e", [] {}).status().code(), absl::StatusCode::kOutOfRange);
  // Resuming at the very end is fine: nothing to replay.
  auto at_end = hub.Subscribe({}, 10, "e", [] {});
  ASSERT_TRUE(at_end.ok());
  EXPECT_TRUE((*at_end)->Drain(10).empty());
}

TEST(EventHubTest, SlowSubscriberOverflowsAloneAndKeepsItsResumePoint) {
  EventHub hub({/*history=*/100, /*queue_depth=*/3}, "e");
  std::atomic<int> slow_wakes{0};
  auto slow = hub.Subscribe({}, std::nullopt, "e", [&] { ++slow_wakes; });
  auto fast = hub.Subscribe({}, std::nullopt, "e", [] {});
  ASSERT_TRUE(slow.ok() && fast.ok());
  std::vector<uint64_t> fast_seen;
  for (int i = 0; i < 10; ++i) {
    hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED));
    if (i == 1) {
      EXPECT_EQ((*slow)->Drain(1).size(), 1u);  // reads one, then stalls
    }
    for (uint64_t s : Sequences((*fast)->Drain(100))) fast_seen.push_back(s);
  }
  EXPECT_FALSE((*fast)->overflowed());
  EXPECT_EQ(fast_seen.size(), 10u);
  EXPECT_TRUE((*slow)->overflowed());
  EXPECT_EQ((*slow)->last_taken(), 1u);
  // What was queued before the overflow is still there; nothing after it.
  EXPECT_EQ(Sequences((*slow)->Drain(100)), (std::vector<uint64_t>{2, 3, 4}));
  // Resuming from the last sequence it took misses nothing.
  auto resumed = hub.Subscribe({}, /*resume_after=*/1, "e", [] {});
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ((*resumed)->Drain(100).size(), 9u);
}

TEST(EventHubTest, FiltersByNameUuidAndTypeButConnectionChangesPass) {
  EventHub hub({}, "e");
  WatchFilter by_name;
  by_name.names = {"a"};
  WatchFilter by_uuid;
  by_uuid.uuids = {"uuid-b"};
  WatchFilter by_type;
  by_type.types = {v1::LIFECYCLE_EVENT_TYPE_STOPPED};
  auto s1 = hub.Subscribe(by_name, std::nullopt, "", [] {});
  auto s2 = hub.Subscribe(by_uuid, std::nullopt, "", [] {});
  auto s3 = hub.Subscribe(by_type, std::nullopt, "", [] {});
  hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED));  // 1
  hub.Publish(Event("b", v1::LIFECYCLE_EVENT_TYPE_STOPPED));  // 2
  hub.Publish(Event("c", v1::LIFECYCLE_EVENT_TYPE_STOPPED));  // 3
  v1::WatchLifecycleResponse lost;
  lost.mutable_connection()->set_state(v1::ConnectionChange::STATE_LOST);
  hub.Publish(lost);  // 4
  EXPECT_EQ(Sequences((*s1)->Drain(10)), (std::vector<uint64_t>{1, 4}));
  EXPECT_EQ(Sequences((*s2)->Drain(10)), (std::vector<uint64_t>{2, 4}));
  EXPECT_EQ(Sequences((*s3)->Drain(10)), (std::vector<uint64_t>{2, 3, 4}));
}

TEST(EventHubTest, UnsubscribeFreesAndStopsWakes) {
  EventHub hub({}, "e");
  std::atomic<int> wakes{0};
  std::vector<std::shared_ptr<EventHub::Subscriber>> subs;
  for (int i = 0; i < 50; ++i) {
    subs.push_back(*hub.Subscribe({}, std::nullopt, "", [&] { ++wakes; }));
  }
  EXPECT_EQ(hub.subscriber_count(), 50u);
  for (auto& s : subs) hub.Unsubscribe(s);
  EXPECT_EQ(hub.subscriber_count(), 0u);
  // A wake for a later subscriber still runs after the removed ones would
  // have: if theirs were called, they would be counted by then.
  std::atomic<int> later{0};
  auto probe = *hub.Subscribe({}, std::nullopt, "", [&] { ++later; });
  hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED));
  ASSERT_TRUE(WaitForWakes(later, 1));
  EXPECT_EQ(wakes, 0);
  hub.Unsubscribe(probe);
}

// Many subscribers drain on their own threads while one thread publishes:
// each sees the identical, gap-free sequence.
TEST(EventHubTest, ConcurrentSubscribersSeeTheIdenticalSequence) {
  constexpr int kSubs = 16, kEvents = 2000;
  EventHub hub({/*history=*/100, /*queue_depth=*/kEvents}, "e");
  std::vector<std::shared_ptr<EventHub::Subscriber>> subs;
  for (int i = 0; i < kSubs; ++i) subs.push_back(*hub.Subscribe({}, std::nullopt, "", [] {}));
  std::vector<std::vector<uint64_t>> seen(kSubs);
  std::vector<std::thread> readers;
  for (int i = 0; i < kSubs; ++i) {
    readers.emplace_back([&, i] {
      while (seen[i].size() < kEvents) {
        for (uint64_t s : Sequences(subs[i]->Drain(64))) seen[i].push_back(s);
        std::this_thread::yield();
      }
    });
  }
  for (int i = 0; i < kEvents; ++i) hub.Publish(Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED));
  for (auto& t : readers) t.join();
  std::vector<uint64_t> expected(kEvents);
  for (int i = 0; i < kEvents; ++i) expected[i] = i + 1;
  for (int i = 0; i < kSubs; ++i) EXPECT_EQ(seen[i], expected) << "subscriber " << i;
}

}  // namespace
}  // namespace virtgate
