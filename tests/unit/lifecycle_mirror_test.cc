// DomainView's catch-up events and the LifecycleMirror that publishes them
// around a reconnect, on a real EventHub. libvirt is not needed: listings
// are written out as they would come from DomainLister.
#include "server/state/domain_cache.h"

#include <libvirt/libvirt.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "server/state/domain_transitions.h"

namespace virtgate {
namespace {

v1::Domain Dom(const std::string& name, v1::DomainState state, bool persistent = true,
               uint32_t id = 0) {
  v1::Domain d;
  d.set_uuid("uuid-" + name);
  d.set_name(name);
  d.set_state(state);
  d.set_persistent(persistent);
  const bool active = state == v1::DOMAIN_STATE_RUNNING || state == v1::DOMAIN_STATE_PAUSED;
  d.set_id(active ? (id != 0 ? id : 1) : 0);
  return d;
}

v1::LifecycleEvent Ev(const std::string& name, v1::LifecycleEventType type, uint32_t id = 0,
                      const std::string& detail = "booted") {
  v1::LifecycleEvent e;
  e.set_domain_uuid("uuid-" + name);
  e.set_domain_name(name);
  e.set_domain_id(id);
  e.set_type(type);
  e.set_detail(detail);
  return e;
}

std::string Names(const std::vector<v1::LifecycleEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    out.push_back(absl::StrCat(e.domain_name(), " ",
                               v1::LifecycleEventType_Name(e.type()).substr(21), "/", e.detail(),
                               e.synthetic() ? "" : " (not synthetic!)"));
  }
  return absl::StrJoin(out, ", ");
}

TEST(DomainViewTest, CatchUpTurnsEachDifferenceIntoTheTransitionsBetween) {
  DomainView view;
  view.Add(Dom("gone-running", v1::DOMAIN_STATE_RUNNING));
  view.Add(Dom("gone-off", v1::DOMAIN_STATE_SHUTOFF));
  view.Add(Dom("gone-transient", v1::DOMAIN_STATE_RUNNING, /*persistent=*/false));
  view.Add(Dom("stopped", v1::DOMAIN_STATE_RUNNING));
  view.Add(Dom("started", v1::DOMAIN_STATE_SHUTOFF));
  view.Add(Dom("paused", v1::DOMAIN_STATE_RUNNING));
  view.Add(Dom("resumed", v1::DOMAIN_STATE_PAUSED));
  view.Add(Dom("rerun", v1::DOMAIN_STATE_RUNNING, true, 3));
  view.Add(Dom("same", v1::DOMAIN_STATE_RUNNING, true, 4));
  view.Add(Dom("made-transient", v1::DOMAIN_STATE_RUNNING));
  std::vector<v1::Domain> now = {
      Dom("stopped", v1::DOMAIN_STATE_SHUTOFF),
      Dom("started", v1::DOMAIN_STATE_RUNNING),
      Dom("paused", v1::DOMAIN_STATE_PAUSED),
      Dom("resumed", v1::DOMAIN_STATE_RUNNING),
      Dom("rerun", v1::DOMAIN_STATE_RUNNING, true, 7),
      Dom("same", v1::DOMAIN_STATE_RUNNING, true, 4),
      Dom("made-transient", v1::DOMAIN_STATE_RUNNING, /*persistent=*/false),
      Dom("new-running", v1::DOMAIN_STATE_RUNNING),
      Dom("new-paused-transient", v1::DOMAIN_STATE_PAUSED, /*persistent=*/false),
      Dom("new-off", v1::DOMAIN_STATE_SHUTOFF),
  };
  EXPECT_EQ(Names(view.CatchUp(now)),
            "gone-off UNDEFINED/removed, "
            "gone-running STOPPED/unknown, gone-running UNDEFINED/removed, "
            "gone-transient STOPPED/unknown, "
            "made-transient UNDEFINED/removed, "
            "new-off DEFINED/added, "
            "new-paused-transient STARTED/unknown, new-paused-transient SUSPENDED/unknown, "
            "new-running DEFINED/added, new-running STARTED/unknown, "
            "paused SUSPENDED/unknown, "
            "rerun STOPPED/unknown, rerun STARTED/unknown, "
            "resumed RESUMED/unknown, "
            "started STARTED/unknown, "
            "stopped STOPPED/unknown");
  // Applied: the same listing again needs nothing.
  EXPECT_EQ(Names(view.CatchUp(now)), "");
}

TEST(DomainViewTest, IsNewDropsWhatTheViewAlreadyShows) {
  DomainView view;
  view.Add(Dom("a", v1::DOMAIN_STATE_RUNNING, true, 5));
  EXPECT_FALSE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_STARTED, 5)));
  EXPECT_FALSE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 4, "destroyed")))
      << "the stop of an earlier run";
  EXPECT_TRUE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 5, "paused")));
  EXPECT_TRUE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 5, "destroyed")));
  EXPECT_FALSE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 5, "destroyed")));
  EXPECT_FALSE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 0, "added")));
  EXPECT_TRUE(view.IsNew(Ev("a", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 0, "updated")));
}

// QEMU's extra states, and snapshots read while a run was ending: events
// of a run the snapshot already reflects are dropped, and dropping one
// leaves the view as it was.
TEST(DomainViewTest, EventsOfARunTheSnapshotReflectsAreDropped) {
  DomainView view;
  // Shown paused: the run's own STARTED is old and must not unpause it.
  view.Add(Dom("p", v1::DOMAIN_STATE_PAUSED, true, 7));
  EXPECT_FALSE(view.IsNew(Ev("p", v1::LIFECYCLE_EVENT_TYPE_STARTED, 7)));
  EXPECT_FALSE(view.IsNew(Ev("p", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 7, "paused")));
  EXPECT_TRUE(view.IsNew(Ev("p", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 7, "unpaused")));

  // Shown shutting down (read mid-destroy): the run's pause and resume are old.
  view.Add(Dom("s", v1::DOMAIN_STATE_SHUTDOWN, true, 8));
  EXPECT_FALSE(view.IsNew(Ev("s", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 8, "paused")));
  EXPECT_FALSE(view.IsNew(Ev("s", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 8, "unpaused")));
  EXPECT_FALSE(view.IsNew(Ev("s", v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN, 8, "host")));
  EXPECT_TRUE(view.IsNew(Ev("s", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 8, "destroyed")));

  // Shown shut off (read after the run ended): its pause, shutdown and stop
  // are old; a new run's RESUMED (QEMU sends it before STARTED) and STARTED
  // are not.
  view.Add(Dom("o", v1::DOMAIN_STATE_SHUTOFF));
  EXPECT_FALSE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 9, "paused")));
  EXPECT_FALSE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN, 9, "host")));
  EXPECT_FALSE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 9, "destroyed")));
  EXPECT_TRUE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 10, "unpaused")));
  EXPECT_TRUE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_STARTED, 10)));
  // ... and while run 10 is shown, run 9's leftovers are old.
  EXPECT_FALSE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 9, "paused")));
  EXPECT_TRUE(view.IsNew(Ev("o", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 10, "paused")));
}

class LifecycleMirrorTest : public ::testing::Test {
 protected:
  LifecycleMirrorTest()
      : hub_(std::make_shared<EventHub>(EventHub::Options{}, "epoch")), mirror_(hub_) {
    auto sub = hub_->Subscribe({}, std::nullopt, "", [] {});
    sub_ = *sub;
  }
  ~LifecycleMirrorTest() override { hub_->Unsubscribe(sub_); }

  // Everything published since the last call, described.
  std::string Published() {
    std::vector<std::string> out;
    for (const EventHub::Message& m : sub_->Drain(1000)) {
      if (m->has_connection()) {
        out.push_back(absl::StrCat(v1::ConnectionChange::State_Name(m->connection().state()),
                                   m->connection().reason().empty() ? "" : " ",
                                   m->connection().reason()));
      } else {
        out.push_back(absl::StrCat(m->event().domain_name(), " ",
                                   v1::LifecycleEventType_Name(m->event().type()).substr(21),
                                   m->event().synthetic() ? " (synthetic)" : ""));
      }
    }
    return absl::StrJoin(out, ", ");
  }

  std::shared_ptr<EventHub> hub_;
  LifecycleMirror mirror_;
  std::shared_ptr<EventHub::Subscriber> sub_;
};

TEST_F(LifecycleMirrorTest, FirstListingOnlySeedsThenLiveEventsPass) {
  mirror_.BeginResync();
  mirror_.FinishResync(std::vector<v1::Domain>{Dom("a", v1::DOMAIN_STATE_RUNNING)});
  EXPECT_EQ(Published(), "") << "nothing was missed at start-up";
  mirror_.OnEvent(Ev("a", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 1, "paused"));
  EXPECT_EQ(Published(), "a SUSPENDED");
}

TEST_F(LifecycleMirrorTest, OutageIsOneLostThenRestoredWithWhatChangedMeanwhile) {
  mirror_.BeginResync();
  mirror_.FinishResync(std::vector<v1::Domain>{Dom("a", v1::DOMAIN_STATE_RUNNING),
                                               Dom("b", v1::DOMAIN_STATE_SHUTOFF)});
  mirror_.OnLost("test:///x: connection closed (end of file)");
  mirror_.OnLost("test:///x: connection refused");  // retries while down
  EXPECT_EQ(Published(), "STATE_LOST test:///x: connection closed (end of file)");
  EXPECT_EQ(mirror_.GetStats().losses, 1u);

  // Reconnected: events from the new registration are held while listing.
  mirror_.BeginResync();
  mirror_.OnEvent(Ev("c", v1::LIFECYCLE_EVENT_TYPE_STARTED, 9));  // reflected in the listing
  mirror_.OnEvent(Ev("c", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 9, "paused"));  // after it
  EXPECT_EQ(Published(), "");
  mirror_.FinishResync(std::vector<v1::Domain>{Dom("b", v1::DOMAIN_STATE_RUNNING),
                                               Dom("c", v1::DOMAIN_STATE_RUNNING, false, 9)});
  EXPECT_EQ(Published(),
            "STATE_RESTORED, a STOPPED (synthetic), a UNDEFINED (synthetic), "
            "b STARTED (synthetic), c STARTED (synthetic), c SUSPENDED");
  // Late duplicates of what the listing showed are dropped for a while.
  mirror_.OnEvent(Ev("b", v1::LIFECYCLE_EVENT_TYPE_STARTED, 1));
  EXPECT_EQ(Published(), "");
  EXPECT_FALSE(mirror_.GetStats().lost);
  EXPECT_EQ(mirror_.GetStats().synthetic, 4u);
}

TEST_F(LifecycleMirrorTest, FailedResyncKeepsTheOutageAndDropsHeldEvents) {
  mirror_.BeginResync();
  mirror_.FinishResync(std::vector<v1::Domain>{});
  mirror_.OnLost("gone");
  mirror_.BeginResync();
  mirror_.OnEvent(Ev("a", v1::LIFECYCLE_EVENT_TYPE_STARTED, 1));
  mirror_.FinishResync(absl::UnavailableError("listing failed"));
  EXPECT_EQ(Published(), "STATE_LOST gone");
  EXPECT_TRUE(mirror_.GetStats().lost);
  // The next resync finds the domain and says so, once.
  mirror_.BeginResync();
  mirror_.FinishResync(std::vector<v1::Domain>{Dom("a", v1::DOMAIN_STATE_RUNNING, false)});
  EXPECT_EQ(Published(), "STATE_RESTORED, a STARTED (synthetic)");
}

TEST_F(LifecycleMirrorTest, WatchOpenedDuringAnOutageHearsOfItFirst) {
  mirror_.OnLost("libvirtd not running");
  auto late = hub_->Subscribe({}, std::nullopt, "", [] {});
  ASSERT_TRUE(late.ok());
  std::vector<EventHub::Message> got = (*late)->Drain(10);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->connection().state(), v1::ConnectionChange::STATE_LOST);
  EXPECT_EQ(got[0]->connection().reason(), "libvirtd not running");
  hub_->Unsubscribe(*late);
  // Once restored, new watches start clean.
  mirror_.BeginResync();
  mirror_.FinishResync(std::vector<v1::Domain>{});
  auto after = hub_->Subscribe({}, std::nullopt, "", [] {});
  EXPECT_TRUE((*after)->Drain(10).empty());
  hub_->Unsubscribe(*after);
}

}  // namespace
}  // namespace virtgate
