// Names and enum mappings for libvirt domain states and their reasons.
// Pure functions; safe from any thread.
#pragma once

#include <optional>
#include <string>

#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// virDomainState -> DomainState (unknown codes -> DOMAIN_STATE_NOSTATE).
v1::DomainState ToProtoState(int libvirt_state);

// The libvirt name of `reason` for `libvirt_state`, as virsh spells it with
// underscores ("booted", "from_snapshot", "destroyed"); "unknown" otherwise.
std::string StateReasonName(int libvirt_state, int reason);

// virDomainEventType -> LifecycleEventType (code + 1; unknown -> UNSPECIFIED).
v1::LifecycleEventType ToProtoEventType(int libvirt_event);

// The libvirt name of an event's detail ("booted", "destroyed", "paused"),
// lower case with underscores; "unknown" for codes newer than this build.
std::string EventDetailName(int libvirt_event, int detail);

// A virDomainState and its reason code.
struct StateAndReason {
  int state;
  int reason;
};

// The state (and reason) libvirt puts a domain in when it raises `event`
// with `detail` (e.g. STOPPED/destroyed -> SHUTOFF/destroyed); the reason is
// 0 (unknown) where the detail does not say (-1, a synthetic event's).
// nullopt for events that do not set the state (DEFINED, UNDEFINED, a
// CRASHED whose guest loaded a crash kernel and runs on).
std::optional<StateAndReason> StateAfterEvent(int libvirt_event, int detail);

// True for states of an active domain (it has a runtime id).
bool IsActiveState(v1::DomainState state);

}  // namespace virtgate
