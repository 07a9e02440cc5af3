// libvirt's default event loop, run on a thread of its own.
//
// libvirt needs a registered event loop for connection keepalive, close
// callbacks and domain events; it must be registered before the first
// connection is opened. The registration is process-wide and cannot be
// undone, so this is a process-wide singleton: the first call starts the loop
// thread, later calls return at once. The thread runs until the process exits.
//
// Nothing may block on this thread: callbacks registered with libvirt copy
// what they need and return.
#pragma once

#include "absl/status/status.h"

namespace virtgate {

// Initialises libvirt, routes its error printing to our log, registers the
// default event implementation and starts the loop thread. Thread-safe,
// idempotent. Returns the (sticky) error if libvirt could not be initialised.
absl::Status EnsureLibvirtEventLoop();

}  // namespace virtgate
