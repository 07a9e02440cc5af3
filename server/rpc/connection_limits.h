// ConnectionLimits: what one client connection may cost the server, set as
// gRPC's own channel arguments on the ServerBuilder (server.cc's StartGrpc).
// gRPC enforces each; nothing of ours runs per connection.
//
//   max_request_bytes    a bigger request message is refused by gRPC with
//                        RESOURCE_EXHAUSTED "Received message larger than max
//                        (N vs. LIMIT)" before any handler sees it;
//   max_streams_per_connection
//                        HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: a gRPC client
//                        queues further calls on that connection, silently,
//                        until one ends. So the default is a client's whole
//                        watch allowance (--max_watches_per_peer, 1000) plus
//                        100 calls: a client within its limits never waits
//                        on one connection (a virtgate::Client has one; with
//                        a limit of 100, the 101st of 1,000 watches on one
//                        channel waited forever). Watches stay bounded per
//                        client, unary calls by the worker queue;
//   max_connection_idle  a connection with no call open for this long gets a
//                        GOAWAY and is closed (gRPC clients reconnect on their
//                        next call, invisibly); open watches are calls;
//   HTTP/2 pings         clients may ping every 10 s at most, with or without
//                        calls (watches are long and often quiet); a client
//                        that pings more often gets GOAWAY ENHANCE_YOUR_CALM
//                        "too_many_pings" after kMaxPingStrikes bad pings.
#pragma once

#include <grpcpp/server_builder.h>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace virtgate {

struct ConnectionLimits {
  // Requests are small: the largest, a watch filter, is about 38 KiB for
  // 1,000 UUIDs (1,000 long names may need more).
  int max_request_bytes = 64 * 1024;
  int max_streams_per_connection = 1100;
  // Zero: never.
  absl::Duration max_connection_idle = absl::Minutes(5);
};

inline constexpr absl::Duration kMinClientPingInterval = absl::Seconds(10);
inline constexpr int kMaxPingStrikes = 2;

// Each out-of-range value named by its flag: INVALID_ARGUMENT.
absl::Status ValidateConnectionLimits(const ConnectionLimits& limits);

void ApplyConnectionLimits(const ConnectionLimits& limits, grpc::ServerBuilder* builder);

}  // namespace virtgate
