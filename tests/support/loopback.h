// Layer 1 of the test support: whether this machine can give a test a
// second client address ([::1] beside 127.0.0.1; connecting to 127.0.0.2
// still comes from 127.0.0.1).
#pragma once

namespace virtgate::testing {

// True if a socket can bind the IPv6 loopback address [::1].
bool HasIpv6Loopback();

// A TCP port on 127.0.0.1 that was free a moment ago (0 if none could be
// had), for a program that cannot pick its own and report it (Prometheus).
int FreeLoopbackPort();

}  // namespace virtgate::testing
