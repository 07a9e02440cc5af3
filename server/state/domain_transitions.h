// How lifecycle events change what is known of a domain: pure functions on
// v1::Domain records, for the DomainCache (no locks, no libvirt, no time).
//
// A record's lifecycle part is its uuid, name, id, state (with reason) and
// persistent flag; the other fields (facts) pass through untouched.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// `record` after `event`; `record` is null for a domain not known yet.
// Events other than STARTED and DEFINED leave an inactive domain as it is
// (QEMU sends RESUMED just before STARTED when it starts a domain). The
// reason is the one libvirt's event detail implies; drivers may record a
// finer one (QEMU's STOPPED/failed leaves SHUTOFF/crashed), which fresh
// reads then bring in (DomainCache::UpdateFacts).
// nullopt: the domain is gone (an inactive one undefined, a transient one
// stopped). This is what a client applying the event to its own view of
// the domain ends with.
std::optional<v1::Domain> ApplyEvent(const v1::Domain* record, const v1::LifecycleEvent& event);

// False if `event` cannot have happened after what `record` shows, i.e. it
// is already reflected in it: a STARTED for a domain shown active, a
// STOPPED for one shown inactive or of an earlier run, a SUSPENDED of a run
// that already ended, ... Used only around a re-listing, where an event may
// arrive after a listing that already shows its effect.
bool IsNewEvent(const v1::Domain* record, const v1::LifecycleEvent& event);

// The events (synthetic = true) that take `known` (uuid -> record) to
// `listed`, the full current listing, in name order: a domain that vanished
// gets STOPPED (if it was active) and UNDEFINED; a new one DEFINED (if
// persistent) and STARTED (if active); a changed one the transitions
// between (a new run, i.e. another id, is STOPPED + STARTED). A listed
// domain that is stale with no state (unreadable now) changes nothing.
std::vector<v1::LifecycleEvent> CatchUpEvents(
    const absl::flat_hash_map<std::string, const v1::Domain*>& known,
    const std::vector<v1::Domain>& listed);

}  // namespace virtgate
