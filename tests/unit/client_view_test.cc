// The one rule set the watch tests check a stream against (test support,
// tests/support/client_view.h): what it accepts and what it reports.
#include "tests/support/client_view.h"

#include <libvirt/libvirt.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace virtgate::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::WatchLifecycleResponse Event(const std::string& name, v1::LifecycleEventType type,
                                 const std::string& detail) {
  v1::WatchLifecycleResponse m;
  m.mutable_event()->set_domain_name(name);
  m.mutable_event()->set_domain_uuid("uuid-" + name);
  m.mutable_event()->set_type(type);
  m.mutable_event()->set_detail(detail);
  return m;
}

v1::WatchLifecycleResponse Initial(const std::string& name, v1::DomainState state,
                                   bool persistent) {
  v1::WatchLifecycleResponse m;
  v1::Domain* d = m.mutable_initial()->mutable_domain();
  d->set_name(name);
  d->set_uuid("uuid-" + name);
  d->set_state(state);
  d->set_persistent(persistent);
  return m;
}

v1::WatchLifecycleResponse Synced() {
  v1::WatchLifecycleResponse m;
  m.mutable_synced();
  return m;
}

v1::WatchLifecycleResponse Connection(v1::ConnectionChange::State state) {
  v1::WatchLifecycleResponse m;
  m.mutable_connection()->set_state(state);
  return m;
}

std::vector<std::string> ApplyAll(ClientView* view,
                                  const std::vector<v1::WatchLifecycleResponse>& messages) {
  std::vector<std::string> problems;
  for (const auto& m : messages) {
    if (std::string p = view->Apply(m); !p.empty()) problems.push_back(p);
  }
  return problems;
}

TEST(ClientViewTest, TestDriverLifecycleIsAccepted) {
  ClientView view;
  EXPECT_THAT(ApplyAll(&view, {Event("a", v1::LIFECYCLE_EVENT_TYPE_DEFINED, "added"),
                               Event("a", v1::LIFECYCLE_EVENT_TYPE_STARTED, "booted"),
                               Event("a", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, "paused"),
                               Event("a", v1::LIFECYCLE_EVENT_TYPE_RESUMED, "unpaused"),
                               Event("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED, "destroyed")}),
              IsEmpty());
  EXPECT_THAT(view.DiffFrom({{"uuid-a", {"a", VIR_DOMAIN_SHUTOFF}}}), IsEmpty());
  EXPECT_THAT(ApplyAll(&view, {Event("a", v1::LIFECYCLE_EVENT_TYPE_UNDEFINED, "removed")}),
              IsEmpty());
  EXPECT_TRUE(view.domains().empty());
}

TEST(ClientViewTest, QemuStartIsResumedThenStarted) {
  ClientView view;
  EXPECT_THAT(ApplyAll(&view, {Initial("q", v1::DOMAIN_STATE_SHUTOFF, true),
                               Synced(),
                               Event("q", v1::LIFECYCLE_EVENT_TYPE_RESUMED, "unpaused"),
                               Event("q", v1::LIFECYCLE_EVENT_TYPE_STARTED, "booted"),
                               Event("q", v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN, "host"),
                               Event("q", v1::LIFECYCLE_EVENT_TYPE_STOPPED, "destroyed")}),
              IsEmpty());
  EXPECT_EQ(view.domains().at("uuid-q").state, VIR_DOMAIN_SHUTOFF);
}

TEST(ClientViewTest, ResumedOfAnInactiveDomainMustBeFollowedByStarted) {
  ClientView view;
  EXPECT_THAT(ApplyAll(&view, {Initial("q", v1::DOMAIN_STATE_SHUTOFF, true),
                               Event("q", v1::LIFECYCLE_EVENT_TYPE_RESUMED, "unpaused"),
                               Event("q", v1::LIFECYCLE_EVENT_TYPE_STOPPED, "destroyed")}),
              ElementsAre(AllOf(HasSubstr("q STOPPED/destroyed"),
                                HasSubstr("not followed by STARTED"),
                                HasSubstr("STOPPED while inactive"))));
  ClientView dangling;
  ApplyAll(&dangling, {Initial("q", v1::DOMAIN_STATE_SHUTOFF, true),
                       Event("q", v1::LIFECYCLE_EVENT_TYPE_RESUMED, "unpaused")});
  EXPECT_THAT(dangling.DiffFrom({{"uuid-q", {"q", VIR_DOMAIN_SHUTOFF}}}),
              ElementsAre(HasSubstr("never STARTED")));
}

TEST(ClientViewTest, ImpossibleTransitionsAreReported) {
  ClientView view;
  EXPECT_THAT(
      ApplyAll(&view, {Initial("r", v1::DOMAIN_STATE_RUNNING, true),
                       Initial("s", v1::DOMAIN_STATE_SHUTOFF, true),
                       Initial("o", v1::DOMAIN_STATE_SHUTOFF, true),
                       Event("r", v1::LIFECYCLE_EVENT_TYPE_STARTED, "booted"),
                       Event("r", v1::LIFECYCLE_EVENT_TYPE_RESUMED, "unpaused"),
                       Event("s", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, "paused"),
                       Event("o", v1::LIFECYCLE_EVENT_TYPE_STOPPED, "destroyed")}),
      ElementsAre(HasSubstr("STARTED while active"), HasSubstr("RESUMED while not paused"),
                  HasSubstr("SUSPENDED while not running"),
                  "o STOPPED/destroyed at seq 0: STOPPED while inactive"));
}

TEST(ClientViewTest, ConnectionChangesAndMarkersAreChecked) {
  ClientView view;
  EXPECT_THAT(ApplyAll(&view, {Synced(), Initial("late", v1::DOMAIN_STATE_RUNNING, true),
                               Connection(v1::ConnectionChange::STATE_LOST),
                               Connection(v1::ConnectionChange::STATE_LOST),
                               Connection(v1::ConnectionChange::STATE_RESTORED)}),
              ElementsAre(HasSubstr("initial state after the synced marker"),
                          HasSubstr("repeats the connection state")));
  EXPECT_EQ(view.lost(), 2);
  EXPECT_EQ(view.restored(), 1);
}

TEST(ClientViewTest, TransientDomainIsGoneOnceStoppedAndDiffsName) {
  ClientView view;
  EXPECT_THAT(ApplyAll(&view, {Event("t", v1::LIFECYCLE_EVENT_TYPE_STARTED, "booted"),
                               Event("p", v1::LIFECYCLE_EVENT_TYPE_DEFINED, "added")}),
              IsEmpty());
  EXPECT_THAT(view.DiffFrom({{"uuid-p", {"p", VIR_DOMAIN_RUNNING}}}),
              ElementsAre("p: view state 5, libvirt state 1",
                          "t: active in the view, not in libvirt"));
  EXPECT_THAT(ApplyAll(&view, {Event("t", v1::LIFECYCLE_EVENT_TYPE_STOPPED, "destroyed")}),
              IsEmpty());
  EXPECT_EQ(view.domains().count("uuid-t"), 0u);
}

}  // namespace
}  // namespace virtgate::testing
