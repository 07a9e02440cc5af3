// PeerKey: which client a call counts against for per-client limits
// (--max_watches_per_peer), from gRPC's peer string (ServerContext::peer()).
//
// A TCP client is its IP address without the port: one client may open
// many connections, each from another port. An IPv4 address seen as an
// IPv4-mapped IPv6 one counts as the IPv4 address. Every unix-socket client
// is one peer, "unix": gRPC does not tell the server the connecting uid,
// and the socket is only open to its owner and group (mode 0660).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace virtgate {

// "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"; "ipv6:[::1]:5" (or its
// percent-encoded form "ipv6:%5B::1%5D:5") -> "ipv6:[::1]";
// "ipv6:[::ffff:10.0.0.7]:5" -> "ipv4:10.0.0.7"; "unix:..." -> "unix";
// anything else -> its scheme (the text before the first ':').
std::string PeerKey(absl::string_view grpc_peer);

}  // namespace virtgate
