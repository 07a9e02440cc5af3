#include "server/libvirt/busy_domains.h"

#include <optional>

#include "gtest/gtest.h"

namespace virtgate {
namespace {

TEST(BusyDomainsTest, BusyOnlyWhileACallOnItIsPastItsDeadline) {
  BusyDomains busy;
  std::optional<BusyDomains::Call> within = busy.Begin("a", absl::Now() + absl::Hours(1));
  EXPECT_FALSE(busy.IsBusy("a")) << "slow is not stuck";
  std::optional<BusyDomains::Call> stuck = busy.Begin("b", absl::Now() - absl::Milliseconds(1));
  EXPECT_TRUE(busy.IsBusy("b"));
  EXPECT_FALSE(busy.IsBusy("a"));
  EXPECT_EQ(busy.Busy(), std::vector<std::string>{"b"});
  stuck.reset();  // the stuck call returned
  EXPECT_FALSE(busy.IsBusy("b"));
  EXPECT_TRUE(busy.Busy().empty());
}

TEST(BusyDomainsTest, CallsWithoutDeadlineCountAsStuckAfterALongWhileOnly) {
  BusyDomains busy;
  BusyDomains::Call call = busy.Begin("a", absl::InfiniteFuture());
  EXPECT_FALSE(busy.IsBusy("a"));
}

}  // namespace
}  // namespace virtgate
