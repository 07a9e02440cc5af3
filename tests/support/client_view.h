// Layer 4 of the test support (the generated API and libvirt's state
// numbers; no server code): a client's view of WatchLifecycle.
//
// ClientView is what a client knows of each domain after applying the
// messages it received (initial states, the synced marker, events,
// synthetic events, connection changes) the way a consumer of the stream
// would, with every message checked to be a possible continuation of what it
// knew. One rule set for every test, test driver and QEMU alike:
//   - a connection change must change the state (no LOST twice);
//   - initial states only before the synced marker;
//   - STARTED only of an inactive domain, SUSPENDED only of a running one,
//     RESUMED only of a paused one, STOPPED only of an active one;
//   - the one exception is QEMU's start: QEMU is started paused and
//     continued before libvirt reports the start, so a RESUMED/unpaused of
//     an inactive domain is accepted if the domain's next event is STARTED;
//   - a transient domain is gone once stopped, any domain once undefined
//     while inactive.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tests/support/test_domains.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate::testing {

// How Describe names an event's type.
enum class EventNames {
  kProto,  // "LIFECYCLE_EVENT_TYPE_STARTED"
  kShort,  // "STARTED"
};

// "name LIFECYCLE_EVENT_TYPE_STARTED/booted" (events, " (synthetic)" if so),
// "connection STATE_LOST (reason)", "name INITIAL DOMAIN_STATE_RUNNING/reason",
// "SYNCED".
std::string Describe(const v1::WatchLifecycleResponse& m, EventNames names = EventNames::kProto);

class ClientView {
 public:
  struct Domain {
    std::string name;
    int state = 0;  // virDomainState
    bool persistent = false;
    bool starting = false;  // RESUMED while inactive: QEMU's start under way
  };

  // Applies one message. Returns a description of the problem if it is not
  // a possible continuation of what the view holds (a duplicate STARTED, a
  // STOPPED of an inactive domain, ...), starting with the message's
  // Describe(m, kShort); else empty.
  std::string Apply(const v1::WatchLifecycleResponse& m);

  // Differences from libvirt's ground truth (by uuid: presence and state),
  // one line each; empty if equal.
  std::vector<std::string> DiffFrom(const std::map<std::string, TruthEntry>& truth) const;

  const std::map<std::string, Domain>& domains() const { return domains_; }  // by uuid
  bool synced() const { return synced_; }
  int lost() const { return lost_; }
  int restored() const { return restored_; }
  int synthetic() const { return synthetic_; }

 private:
  std::string ApplyEvent(const v1::LifecycleEvent& e);
  // The event's change to `d` (an entry of domains_, which it may erase);
  // a problem, or empty.
  std::string ApplyTransition(const v1::LifecycleEvent& e, Domain& d);

  std::map<std::string, Domain> domains_;  // by uuid
  bool synced_ = false;
  bool connected_ = true;
  int lost_ = 0, restored_ = 0, synthetic_ = 0;
};

}  // namespace virtgate::testing
