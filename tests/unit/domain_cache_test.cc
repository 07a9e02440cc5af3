// The DomainCache and the transition rules it applies, on a real EventHub.
// libvirt is not needed: listings and events are written out as the
// LifecycleFeed would hand them over.
#include "server/state/domain_cache.h"

#include <libvirt/libvirt.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "server/libvirt/domain_state.h"
#include "server/state/domain_transitions.h"
#include "server/state/initial_states.h"

namespace virtgate {
namespace {

v1::Domain Dom(const std::string& name, v1::DomainState state, bool persistent = true,
               uint32_t id = 0) {
  v1::Domain d;
  d.set_uuid("uuid-" + name);
  d.set_name(name);
  d.set_state(state);
  d.set_persistent(persistent);
  d.set_id(IsActiveState(state) ? (id != 0 ? id : 1) : 0);
  return d;
}

// An event as libvirt's callback reports it (type and detail codes too).
v1::LifecycleEvent Ev(const std::string& name, v1::LifecycleEventType type, uint32_t id = 0,
                      const std::string& detail = "booted", int detail_code = 0) {
  v1::LifecycleEvent e;
  e.set_domain_uuid("uuid-" + name);
  e.set_domain_name(name);
  e.set_domain_id(id);
  e.set_type(type);
  e.set_type_code(static_cast<int>(type) - 1);
  e.set_detail(detail);
  e.set_detail_code(detail_code);
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

absl::flat_hash_map<std::string, const v1::Domain*> Known(const std::vector<v1::Domain>& ds) {
  absl::flat_hash_map<std::string, const v1::Domain*> out;
  for (const v1::Domain& d : ds) out[d.uuid()] = &d;
  return out;
}

TEST(DomainTransitionsTest, CatchUpTurnsEachDifferenceIntoTheTransitionsBetween) {
  const std::vector<v1::Domain> was = {
      Dom("gone-running", v1::DOMAIN_STATE_RUNNING),
      Dom("gone-off", v1::DOMAIN_STATE_SHUTOFF),
      Dom("gone-transient", v1::DOMAIN_STATE_RUNNING, /*persistent=*/false),
      Dom("stopped", v1::DOMAIN_STATE_RUNNING),
      Dom("started", v1::DOMAIN_STATE_SHUTOFF),
      Dom("paused", v1::DOMAIN_STATE_RUNNING),
      Dom("resumed", v1::DOMAIN_STATE_PAUSED),
      Dom("rerun", v1::DOMAIN_STATE_RUNNING, true, 3),
      Dom("same", v1::DOMAIN_STATE_RUNNING, true, 4),
      Dom("made-transient", v1::DOMAIN_STATE_RUNNING),
      Dom("pm", v1::DOMAIN_STATE_RUNNING, true, 6),
      Dom("woke", v1::DOMAIN_STATE_PMSUSPENDED, true, 8),
  };
  const std::vector<v1::Domain> now = {
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
      Dom("pm", v1::DOMAIN_STATE_PMSUSPENDED, true, 6),
      Dom("woke", v1::DOMAIN_STATE_RUNNING, true, 8),
  };
  EXPECT_EQ(Names(CatchUpEvents(Known(was), now)),
            "gone-off UNDEFINED/removed, "
            "gone-running STOPPED/unknown, gone-running UNDEFINED/removed, "
            "gone-transient STOPPED/unknown, "
            "made-transient UNDEFINED/removed, "
            "new-off DEFINED/added, "
            "new-paused-transient STARTED/unknown, new-paused-transient SUSPENDED/unknown, "
            "new-running DEFINED/added, new-running STARTED/unknown, "
            "paused SUSPENDED/unknown, "
            "pm PMSUSPENDED/unknown, "
            "rerun STOPPED/unknown, rerun STARTED/unknown, "
            "resumed RESUMED/unknown, "
            "started STARTED/unknown, "
            "stopped STOPPED/unknown, "
            "woke RESUMED/unknown");
  EXPECT_EQ(Names(CatchUpEvents(Known(now), now)), "") << "nothing changed, nothing to send";
}

TEST(DomainTransitionsTest, IsNewDropsWhatTheRecordAlreadyShows) {
  const v1::Domain a = Dom("a", v1::DOMAIN_STATE_RUNNING, true, 5);
  EXPECT_FALSE(IsNewEvent(&a, Ev("a", v1::LIFECYCLE_EVENT_TYPE_STARTED, 5)));
  EXPECT_FALSE(IsNewEvent(&a, Ev("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 4, "destroyed")))
      << "the stop of an earlier run";
  EXPECT_TRUE(IsNewEvent(&a, Ev("a", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 5, "paused")));
  EXPECT_TRUE(IsNewEvent(&a, Ev("a", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 5, "destroyed")));
  EXPECT_FALSE(IsNewEvent(&a, Ev("a", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 0, "added")));
  EXPECT_TRUE(IsNewEvent(&a, Ev("a", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 0, "updated")));
  EXPECT_TRUE(IsNewEvent(nullptr, Ev("a", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 0, "added")));
  EXPECT_FALSE(IsNewEvent(nullptr, Ev("a", v1::LIFECYCLE_EVENT_TYPE_UNDEFINED, 0, "removed")));
}

// QEMU's extra states, and snapshots read while a run was ending: events
// of a run the record already reflects are not new.
TEST(DomainTransitionsTest, EventsOfARunTheRecordReflectsAreNotNew) {
  // Shown paused: the run's own STARTED is old.
  const v1::Domain p = Dom("p", v1::DOMAIN_STATE_PAUSED, true, 7);
  EXPECT_FALSE(IsNewEvent(&p, Ev("p", v1::LIFECYCLE_EVENT_TYPE_STARTED, 7)));
  EXPECT_FALSE(IsNewEvent(&p, Ev("p", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 7, "paused")));
  EXPECT_TRUE(IsNewEvent(&p, Ev("p", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 7, "unpaused")));
  // Shown shutting down (read mid-destroy): the run's pause and resume are old.
  const v1::Domain s = Dom("s", v1::DOMAIN_STATE_SHUTDOWN, true, 8);
  EXPECT_FALSE(IsNewEvent(&s, Ev("s", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 8, "paused")));
  EXPECT_FALSE(IsNewEvent(&s, Ev("s", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 8, "unpaused")));
  EXPECT_FALSE(IsNewEvent(&s, Ev("s", v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN, 8, "host")));
  EXPECT_TRUE(IsNewEvent(&s, Ev("s", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 8, "destroyed")));
  // Shown shut off (read after the run ended): its pause, shutdown and stop
  // are old; a new run's RESUMED (QEMU sends it before STARTED) and STARTED
  // are not.
  const v1::Domain o = Dom("o", v1::DOMAIN_STATE_SHUTOFF);
  EXPECT_FALSE(IsNewEvent(&o, Ev("o", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 9, "paused")));
  EXPECT_FALSE(IsNewEvent(&o, Ev("o", v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN, 9, "host")));
  EXPECT_FALSE(IsNewEvent(&o, Ev("o", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 9, "destroyed")));
  EXPECT_TRUE(IsNewEvent(&o, Ev("o", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 10, "unpaused")));
  EXPECT_TRUE(IsNewEvent(&o, Ev("o", v1::LIFECYCLE_EVENT_TYPE_STARTED, 10)));
  // While run 10 is shown, run 9's leftovers are old.
  const v1::Domain o10 = Dom("o", v1::DOMAIN_STATE_RUNNING, true, 10);
  EXPECT_FALSE(IsNewEvent(&o10, Ev("o", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 9, "paused")));
  EXPECT_TRUE(IsNewEvent(&o10, Ev("o", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 10, "paused")));
}

// What a record becomes, event by event: libvirt's state and reason for
// each (as virsh domstate --reason shows them), and a transient domain that
// goes away with its run.
TEST(DomainTransitionsTest, ApplyEventGivesLibvirtsStateAndReason) {
  std::optional<v1::Domain> d = ApplyEvent(
      nullptr, Ev("t", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 0, "added", VIR_DOMAIN_EVENT_DEFINED_ADDED));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->state(), v1::DOMAIN_STATE_SHUTOFF);
  EXPECT_TRUE(d->persistent());
  d = ApplyEvent(&*d, Ev("t", v1::LIFECYCLE_EVENT_TYPE_STARTED, 4, "booted",
                         VIR_DOMAIN_EVENT_STARTED_BOOTED));
  EXPECT_EQ(d->state(), v1::DOMAIN_STATE_RUNNING);
  EXPECT_EQ(d->state_reason(), "booted");
  EXPECT_EQ(d->id(), 4u);
  d = ApplyEvent(&*d, Ev("t", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 4, "paused",
                         VIR_DOMAIN_EVENT_SUSPENDED_PAUSED));
  EXPECT_EQ(d->state(), v1::DOMAIN_STATE_PAUSED);
  EXPECT_EQ(d->state_reason(), "user");
  d = ApplyEvent(&*d, Ev("t", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 4, "unpaused",
                         VIR_DOMAIN_EVENT_RESUMED_UNPAUSED));
  EXPECT_EQ(d->state(), v1::DOMAIN_STATE_RUNNING);
  EXPECT_EQ(d->state_reason(), "unpaused");
  d = ApplyEvent(&*d, Ev("t", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 4, "destroyed",
                         VIR_DOMAIN_EVENT_STOPPED_DESTROYED));
  EXPECT_EQ(d->state(), v1::DOMAIN_STATE_SHUTOFF);
  EXPECT_EQ(d->state_reason(), "destroyed");
  EXPECT_EQ(d->id(), 0u);
  EXPECT_FALSE(ApplyEvent(&*d, Ev("t", v1::LIFECYCLE_EVENT_TYPE_UNDEFINED, 0, "removed"))
                   .has_value())
      << "undefined while shut off: gone";
  // A transient domain: created running, gone when it stops.
  std::optional<v1::Domain> tr = ApplyEvent(nullptr, Ev("tr", v1::LIFECYCLE_EVENT_TYPE_STARTED, 9));
  ASSERT_TRUE(tr.has_value());
  EXPECT_FALSE(tr->persistent());
  EXPECT_EQ(tr->id(), 9u);
  EXPECT_FALSE(ApplyEvent(&*tr, Ev("tr", v1::LIFECYCLE_EVENT_TYPE_STOPPED, 9, "destroyed", 1))
                   .has_value());
  // QEMU starts a domain with RESUMED, then STARTED: the RESUMED changes
  // nothing on a shut-off domain, so the STARTED is new, and applies.
  const v1::Domain off = Dom("q", v1::DOMAIN_STATE_SHUTOFF);
  const v1::LifecycleEvent resumed = Ev("q", v1::LIFECYCLE_EVENT_TYPE_RESUMED, 5, "unpaused");
  std::optional<v1::Domain> q = ApplyEvent(&off, resumed);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->state(), v1::DOMAIN_STATE_SHUTOFF);
  const v1::LifecycleEvent started = Ev("q", v1::LIFECYCLE_EVENT_TYPE_STARTED, 5);
  EXPECT_TRUE(IsNewEvent(&*q, started));
  q = ApplyEvent(&*q, started);
  EXPECT_EQ(q->state(), v1::DOMAIN_STATE_RUNNING);
  EXPECT_EQ(q->id(), 5u);
  EXPECT_FALSE(ApplyEvent(nullptr, resumed).has_value()) << "nothing to create from a RESUMED";
  // Undefining a running domain makes it transient; it lives on.
  const v1::Domain running = Dom("r", v1::DOMAIN_STATE_RUNNING, true, 3);
  std::optional<v1::Domain> r =
      ApplyEvent(&running, Ev("r", v1::LIFECYCLE_EVENT_TYPE_UNDEFINED, 3, "removed"));
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->persistent());
  EXPECT_EQ(r->state(), v1::DOMAIN_STATE_RUNNING);
}

class DomainCacheTest : public ::testing::Test {
 protected:
  DomainCacheTest()
      : hub_(std::make_shared<EventHub>(EventHub::Options{}, "epoch")),
        availability_(std::make_shared<Availability>()),
        cache_(DomainCache::Options{}, hub_, availability_) {
    auto sub = hub_->Subscribe({}, std::nullopt, "", [] {});
    sub_ = *sub;
  }
  ~DomainCacheTest() override { hub_->Unsubscribe(sub_); }

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

  // The cache's records, described: "name:STATE".
  std::string Records(const DomainCache::Query& query = {}) {
    std::vector<std::string> out;
    for (const DomainCache::Record& r : cache_.Read(query).domains) {
      out.push_back(absl::StrCat(r->name(), ":", v1::DomainState_Name(r->state()).substr(13)));
    }
    return absl::StrJoin(out, " ");
  }

  void Seed(std::vector<v1::Domain> listed) {
    cache_.BeginResync();
    EXPECT_TRUE(cache_.FinishResync(std::move(listed)).ok());
  }

  std::shared_ptr<EventHub> hub_;
  std::shared_ptr<Availability> availability_;
  DomainCache cache_;
  std::shared_ptr<EventHub::Subscriber> sub_;
};

TEST_F(DomainCacheTest, FirstListingOnlySeedsThenLiveEventsApply) {
  EXPECT_FALSE(cache_.Read({}).seeded);
  EXPECT_FALSE(availability_->Get().events_up);
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING), Dom("b", v1::DOMAIN_STATE_SHUTOFF)});
  EXPECT_EQ(Published(), "") << "nothing was missed at start-up";
  EXPECT_TRUE(availability_->Get().events_up);
  EXPECT_EQ(Records(), "a:RUNNING b:SHUTOFF");
  cache_.OnEvent(Ev("a", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 1, "paused"));
  EXPECT_EQ(Published(), "a SUSPENDED");
  EXPECT_EQ(Records(), "a:PAUSED b:SHUTOFF");
  const DomainCache::View view = cache_.Read({});
  EXPECT_EQ(view.sequence, 1u);
  EXPECT_EQ(view.domains[0]->sequence(), 1u) << "the record names the change it reflects";
  EXPECT_EQ(view.domains[1]->sequence(), 0u);
}

TEST_F(DomainCacheTest, OutageIsOneLostThenRestoredWithWhatChangedMeanwhile) {
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING), Dom("b", v1::DOMAIN_STATE_SHUTOFF)});
  cache_.OnLost("test:///x: connection closed (end of file)");
  cache_.OnLost("test:///x: connection refused");  // retries while down
  EXPECT_EQ(Published(), "STATE_LOST test:///x: connection closed (end of file)");
  EXPECT_EQ(cache_.GetStats().losses, 1u);
  EXPECT_FALSE(availability_->Get().events_up);
  EXPECT_FALSE(cache_.Read({}).current) << "the cache cannot vouch for state now";
  EXPECT_EQ(Records(), "a:RUNNING b:SHUTOFF") << "but keeps what it knew";

  // Reconnected: events from the new registration are held while listing.
  cache_.BeginResync();
  cache_.OnEvent(Ev("c", v1::LIFECYCLE_EVENT_TYPE_STARTED, 9));  // reflected in the listing
  cache_.OnEvent(Ev("c", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 9, "paused"));  // after it
  EXPECT_EQ(Published(), "");
  EXPECT_TRUE(cache_
                  .FinishResync(std::vector<v1::Domain>{
                      Dom("b", v1::DOMAIN_STATE_RUNNING), Dom("c", v1::DOMAIN_STATE_RUNNING, false, 9)})
                  .ok());
  EXPECT_EQ(Published(),
            "STATE_RESTORED, a STOPPED (synthetic), a UNDEFINED (synthetic), "
            "b STARTED (synthetic), c STARTED (synthetic), c SUSPENDED");
  EXPECT_EQ(Records(), "b:RUNNING c:PAUSED");
  // Late duplicates of what the listing showed are dropped for a while.
  cache_.OnEvent(Ev("b", v1::LIFECYCLE_EVENT_TYPE_STARTED, 1));
  EXPECT_EQ(Published(), "");
  EXPECT_TRUE(cache_.GetStats().current);
  EXPECT_EQ(cache_.GetStats().synthetic, 4u);
  EXPECT_EQ(cache_.GetStats().duplicates, 2u);
}

TEST_F(DomainCacheTest, FailedResyncKeepsTheOutageAndDropsHeldEvents) {
  Seed({});
  cache_.OnLost("gone");
  cache_.BeginResync();
  cache_.OnEvent(Ev("a", v1::LIFECYCLE_EVENT_TYPE_STARTED, 1));
  EXPECT_FALSE(cache_.FinishResync(absl::UnavailableError("listing failed")).ok());
  EXPECT_EQ(Published(), "STATE_LOST gone");
  EXPECT_FALSE(cache_.GetStats().current);
  // The next resync finds the domain and says so, once.
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING, false)});
  EXPECT_EQ(Published(), "STATE_RESTORED, a STARTED (synthetic)");
}

TEST_F(DomainCacheTest, LibvirtAbsentAtStartIsLostThenEverythingIsNew) {
  cache_.OnLost("libvirtd not running");
  EXPECT_EQ(Published(), "STATE_LOST libvirtd not running");
  EXPECT_FALSE(cache_.Read({}).seeded);
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING)});
  EXPECT_EQ(Published(), "STATE_RESTORED, a DEFINED (synthetic), a STARTED (synthetic)");
}

TEST_F(DomainCacheTest, WatchOpenedDuringAnOutageHearsOfItFirst) {
  cache_.OnLost("libvirtd not running");
  auto late = hub_->Subscribe({}, std::nullopt, "", [] {});
  ASSERT_TRUE(late.ok());
  std::vector<EventHub::Message> got = (*late)->Drain(10);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->connection().state(), v1::ConnectionChange::STATE_LOST);
  EXPECT_EQ(got[0]->connection().reason(), "libvirtd not running");
  hub_->Unsubscribe(*late);
  // Once restored, new watches start clean.
  Seed({});
  auto after = hub_->Subscribe({}, std::nullopt, "", [] {});
  EXPECT_TRUE((*after)->Drain(10).empty());
  hub_->Unsubscribe(*after);
}

// The snapshot and the subscription are one: the snapshot is the cache at
// S, and the subscriber gets exactly the events after S.
TEST_F(DomainCacheTest, SnapshotAndSubscriptionMeetAtOneSequence) {
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING), Dom("b", v1::DOMAIN_STATE_SHUTOFF),
        Dom("c", v1::DOMAIN_STATE_SHUTOFF)});
  cache_.OnEvent(Ev("b", v1::LIFECYCLE_EVENT_TYPE_STARTED, 2));
  WatchFilter only_a_and_b;
  only_a_and_b.names = {"a", "b"};
  absl::StatusOr<DomainCache::Subscription> sub =
      cache_.SubscribeWithSnapshot(only_a_and_b, [] {});
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ(sub->snapshot.sequence, 1u);
  ASSERT_EQ(sub->snapshot.domains.size(), 2u);
  EXPECT_EQ(sub->snapshot.domains[1]->state(), v1::DOMAIN_STATE_RUNNING) << "b, as of 1";
  cache_.OnEvent(Ev("b", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 2, "paused"));
  cache_.OnEvent(Ev("c", v1::LIFECYCLE_EVENT_TYPE_STARTED, 3));
  std::vector<EventHub::Message> after = sub->subscriber->Drain(10);
  ASSERT_EQ(after.size(), 1u) << "only b's, and only after the snapshot";
  EXPECT_EQ(after[0]->sequence(), 2u);
  // The initial messages: one per domain, then synced, all at sequence 1.
  InitialStates initial(hub_.get(), sub->snapshot);
  std::vector<std::string> kinds;
  while (EventHub::Message m = initial.Next()) {
    EXPECT_EQ(m->sequence(), 1u);
    EXPECT_EQ(m->epoch(), "epoch");
    kinds.push_back(m->has_synced() ? "synced" : m->initial().domain().name());
  }
  EXPECT_EQ(absl::StrJoin(kinds, " "), "a b synced");
  hub_->Unsubscribe(sub->subscriber);
}

TEST_F(DomainCacheTest, PagesFollowNameOrderFromACursorWithFilters) {
  Seed({Dom("d", v1::DOMAIN_STATE_RUNNING), Dom("a", v1::DOMAIN_STATE_SHUTOFF),
        Dom("c", v1::DOMAIN_STATE_RUNNING), Dom("b", v1::DOMAIN_STATE_PAUSED)});
  DomainCache::Query first;
  first.limit = 2;
  DomainCache::View page = cache_.Read(first);
  EXPECT_EQ(page.domains.size(), 2u);
  EXPECT_TRUE(page.more);
  EXPECT_EQ(page.total, 4u);
  DomainCache::Query next;
  next.after = std::make_pair(page.domains.back()->name(), page.domains.back()->uuid());
  EXPECT_EQ(Records(next), "c:RUNNING d:RUNNING");
  DomainCache::Query running;
  running.matches = [](const v1::Domain& d) { return d.state() == v1::DOMAIN_STATE_RUNNING; };
  running.limit = 1;
  page = cache_.Read(running);
  ASSERT_EQ(page.domains.size(), 1u);
  EXPECT_EQ(page.domains[0]->name(), "c");
  EXPECT_TRUE(page.more);
  // A rename moves it in the order.
  v1::LifecycleEvent renamed =
      Ev("d", v1::LIFECYCLE_EVENT_TYPE_DEFINED, 1, "renamed", VIR_DOMAIN_EVENT_DEFINED_RENAMED);
  renamed.set_domain_name("zz");
  cache_.OnEvent(renamed);
  EXPECT_EQ(Records(), "a:SHUTOFF b:PAUSED c:RUNNING zz:RUNNING");
  ASSERT_TRUE(cache_.FindByName("c").has_value());
  EXPECT_FALSE(cache_.FindByName("cc").has_value());
  EXPECT_EQ((*cache_.FindByUuid("uuid-b"))->name(), "b");
}

TEST_F(DomainCacheTest, FreshReadsWriteFactsNeverState) {
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING), Dom("b", v1::DOMAIN_STATE_SHUTOFF)});
  const absl::Time t = absl::FromUnixSeconds(1700000000);
  DomainCache::Facts facts_a;
  facts_a.uuid = "uuid-a";
  facts_a.vcpus = 2;
  facts_a.memory_kib = 1024;
  facts_a.max_memory_kib = 2048;
  facts_a.cpu_time_ns = 99;
  DomainCache::Facts facts_gone = facts_a;
  facts_gone.uuid = "uuid-gone";
  cache_.UpdateFacts({facts_a, facts_gone}, t);
  cache_.UpdateAutostart({"uuid-b"}, t);
  const DomainCache::View view = cache_.Read({});
  ASSERT_EQ(view.domains.size(), 2u) << "facts of an unknown domain add nothing";
  EXPECT_EQ(view.domains[0]->vcpus(), 2u);
  EXPECT_EQ(view.domains[0]->cpu_time_ns(), 99u);
  EXPECT_EQ(view.domains[0]->facts_time().seconds(), 1700000000);
  EXPECT_EQ(view.domains[0]->state(), v1::DOMAIN_STATE_RUNNING);
  EXPECT_FALSE(view.domains[0]->autostart());
  EXPECT_TRUE(view.domains[1]->autostart());
  EXPECT_FALSE(view.domains[1]->has_facts_time());
  EXPECT_EQ(cache_.autostart_read_at(), t);
  // libvirt's reason replaces the event's where the state agrees (QEMU's
  // STOPPED/failed leaves SHUTOFF/crashed); its state is never taken.
  DomainCache::Facts b;
  b.uuid = "uuid-b";
  b.seen = StateAndReason{VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_CRASHED};
  DomainCache::Facts a;
  a.uuid = "uuid-a";
  a.seen = StateAndReason{VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_USER};
  cache_.UpdateFacts({a, b}, t);
  EXPECT_EQ((*cache_.FindByUuid("uuid-b"))->state_reason(), "crashed");
  EXPECT_EQ((*cache_.FindByUuid("uuid-a"))->state(), v1::DOMAIN_STATE_RUNNING);
  EXPECT_EQ(Published(), "");
  // Facts of an earlier read, or of the record before a change, are not
  // written over what is newer.
  const uint32_t vcpus_now = (*cache_.FindByUuid("uuid-a"))->vcpus();
  DomainCache::Facts older = facts_a;
  older.vcpus = 7;
  cache_.UpdateFacts({older}, t - absl::Seconds(1));
  EXPECT_EQ((*cache_.FindByUuid("uuid-a"))->vcpus(), vcpus_now);
  cache_.OnEvent(Ev("a", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 1, "paused"));
  cache_.UpdateFacts({older}, t + absl::Seconds(1));  // read at sequence 0
  EXPECT_EQ((*cache_.FindByUuid("uuid-a"))->vcpus(), vcpus_now);
  older.sequence = 1;  // read after the change: written
  cache_.UpdateFacts({older}, t + absl::Seconds(1));
  EXPECT_EQ((*cache_.FindByUuid("uuid-a"))->vcpus(), 7u);
}

// A state libvirt reports that no event explains, for longer than the
// grace period, is drift: counted, and the caller re-lists once.
TEST_F(DomainCacheTest, UnexplainedStatesAreDriftExplainedOnesAreNot) {
  Seed({Dom("a", v1::DOMAIN_STATE_RUNNING, true, 1), Dom("b", v1::DOMAIN_STATE_RUNNING, true, 2)});
  const absl::Time now = absl::Now();
  // Both seen paused; only b's SUSPENDED event arrives.
  cache_.NoteObserved({{"uuid-a", 0, true, v1::DOMAIN_STATE_PAUSED, 1},
                       {"uuid-b", 0, true, v1::DOMAIN_STATE_PAUSED, 2}});
  cache_.OnEvent(Ev("b", v1::LIFECYCLE_EVENT_TYPE_SUSPENDED, 2, "paused"));
  EXPECT_FALSE(cache_.TakeConfirmedDrift(now)) << "within the grace period";
  EXPECT_TRUE(cache_.TakeConfirmedDrift(now + absl::Seconds(6)));
  EXPECT_FALSE(cache_.TakeConfirmedDrift(now + absl::Seconds(7))) << "once";
  EXPECT_EQ(cache_.GetStats().drift_resyncs, 1u);
  // Agreement clears a suspicion; events in flight are not drift.
  cache_.NoteObserved({{"uuid-b", 1, true, v1::DOMAIN_STATE_RUNNING, 2}});
  cache_.NoteObserved({{"uuid-b", 1, true, v1::DOMAIN_STATE_PAUSED, 2}});
  EXPECT_FALSE(cache_.TakeConfirmedDrift(now + absl::Seconds(60)));
  // A read made before the record's last change says nothing about drift.
  cache_.NoteObserved({{"uuid-b", 0, true, v1::DOMAIN_STATE_RUNNING, 2}});
  EXPECT_FALSE(cache_.TakeConfirmedDrift(now + absl::Seconds(60)));
  // A domain libvirt no longer has, with no UNDEFINED on the way, is drift.
  cache_.NoteObserved({{"uuid-a", 0, /*exists=*/false}});
  EXPECT_TRUE(cache_.TakeConfirmedDrift(absl::Now() + absl::Seconds(6)));
}

}  // namespace
}  // namespace virtgate
