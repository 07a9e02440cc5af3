// ListingSnapshots: what a paged listing's later pages are served from, and
// the memory it pins, is bounded in size and in time.
#include "server/reads/listing_snapshots.h"

#include <gtest/gtest.h>

#include <memory>

#include "tests/support/wait_for.h"

namespace virtgate {
namespace {

ListingSnapshots::View ViewOf(size_t domains) {
  auto view = std::make_shared<DomainCache::View>();
  for (size_t i = 0; i < domains; ++i) {
    view->domains.push_back(std::make_shared<const v1::Domain>());
  }
  view->total = domains;
  return view;
}

TEST(ListingSnapshotsTest, KeepsAtMostMaxRecordsDroppingTheLeastRecentlyUsed) {
  ListingSnapshots snapshots({/*max_records=*/250, absl::Minutes(10)});
  const uint64_t first = snapshots.Keep(ViewOf(100));
  const uint64_t second = snapshots.Keep(ViewOf(100));
  ASSERT_NE(snapshots.Find(first), nullptr);  // now the most recently used
  const uint64_t third = snapshots.Keep(ViewOf(100));
  EXPECT_EQ(snapshots.records(), 200u);
  EXPECT_EQ(snapshots.Find(second), nullptr);
  EXPECT_NE(snapshots.Find(first), nullptr);
  EXPECT_NE(snapshots.Find(third), nullptr);
}

TEST(ListingSnapshotsTest, KeepsTwoOfTheLargestListingsWhateverTheCap) {
  ListingSnapshots snapshots({/*max_records=*/100, absl::Minutes(10)});
  const uint64_t first = snapshots.Keep(ViewOf(300));
  const uint64_t second = snapshots.Keep(ViewOf(300));
  EXPECT_NE(snapshots.Find(first), nullptr);
  EXPECT_NE(snapshots.Find(second), nullptr);
  snapshots.Keep(ViewOf(300));
  EXPECT_EQ(snapshots.records(), 600u);
}

TEST(ListingSnapshotsTest, LetsGoOfExpiredSnapshotsWhileNothingElseHappens) {
  ListingSnapshots snapshots({/*max_records=*/1000, absl::Seconds(1)});
  snapshots.Keep(ViewOf(100));
  snapshots.Keep(ViewOf(100));
  EXPECT_GT(snapshots.records(), 0u);
  // No Keep or Find after these: the records go with the ttl all the same.
  EXPECT_TRUE(testing::WaitFor([&] { return snapshots.records() == 0; }, absl::Seconds(30)));
}

}  // namespace
}  // namespace virtgate
