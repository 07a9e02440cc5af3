// Names and enum mappings for libvirt domain states and their reasons.
// Pure functions; safe from any thread.
#pragma once

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

}  // namespace virtgate
