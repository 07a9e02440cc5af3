// DomainView: what a client has been shown of each domain's lifecycle state
// (active, paused, persistent, runtime id, name), kept up to date with the
// events it is sent.
//
// Two users:
//   - a send_initial_state watch (WatchReactor) seeds it from its snapshot
//     and drops the events the snapshot already reflected (IsNew);
//   - the server-wide LifecycleMirror seeds it with everything published,
//     and after a reconnect turns a fresh listing into the synthetic events
//     that take every watcher from what it was shown to libvirt's state
//     (CatchUp).
//
// Not thread-safe: the owner locks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class DomainView {
 public:
  // Records `domain` as shown (replacing what was shown of it).
  void Add(const v1::Domain& domain);

  // False if `event` cannot have happened after what the view shows, i.e. it
  // was already reflected in it (a STARTED for a domain shown active, a
  // STOPPED for one shown inactive or of an earlier run, a SUSPENDED of a
  // run that already ended, ...); the view is then left as it is. True
  // otherwise, and the view is updated.
  bool IsNew(const v1::LifecycleEvent& event);

  // The events (synthetic = true) that take the view to `listed`, the full
  // current listing, in name order; applies them. A domain that vanished
  // gets STOPPED (if it was active) and UNDEFINED; a new one DEFINED (if
  // persistent) and STARTED (if active); a changed one the transitions
  // between (a new run, i.e. another id, is STOPPED + STARTED).
  std::vector<v1::LifecycleEvent> CatchUp(const std::vector<v1::Domain>& listed);

  size_t size() const { return domains_.size(); }

 private:
  struct Shown {
    std::string name;
    bool active = false;
    bool paused = false;
    bool shutting_down = false;  // SHUTDOWN seen (or shown): the run is ending
    uint32_t id = 0;
    bool persistent = false;
  };
  static Shown FromDomain(const v1::Domain& d);

  absl::flat_hash_map<std::string, Shown> domains_;  // by uuid; absent = not shown
};

}  // namespace virtgate
