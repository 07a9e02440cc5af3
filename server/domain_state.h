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

}  // namespace virtgate
