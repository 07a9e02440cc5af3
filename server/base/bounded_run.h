// RunOrAbandon: runs `work` on a thread of its own and waits for it until
// `deadline`; past it, leaves the thread to finish alone (detached). For
// shutdown steps that talk to libvirtd, which may be stalled: closing
// connections must not hold the process past its grace period. `work`
// must own (or share) everything it touches.
#pragma once

#include <functional>

#include "absl/time/time.h"

namespace virtgate {

// True if `work` finished by `deadline`. Otherwise NoteAbandonedThread().
bool RunOrAbandon(std::function<void()> work, absl::Time deadline);

// Records that a thread was left running, possibly inside libvirt, which
// uses process-wide state (OpenSSL, SASL) that exit handlers free. A process
// that abandoned one must end with _exit, not exit or a return from main.
void NoteAbandonedThread();
bool AnyThreadAbandoned();

}  // namespace virtgate
