#include "server/rpc/connection_limits.h"

#include <climits>

#include "absl/strings/str_cat.h"

namespace virtgate {

absl::Status ValidateConnectionLimits(const ConnectionLimits& limits) {
  // Below a few KiB, ordinary requests (a page token is up to 4 KiB) fail.
  if (limits.max_request_bytes < 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_request_bytes must be at least 4096, got ", limits.max_request_bytes));
  }
  if (limits.max_streams_per_connection < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_streams_per_connection must be at least 1, got ",
        limits.max_streams_per_connection));
  }
  if (limits.max_connection_idle < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--max_connection_idle must not be negative");
  }
  return absl::OkStatus();
}

void ApplyConnectionLimits(const ConnectionLimits& limits, grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(limits.max_request_bytes);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_streams_per_connection);
  const int64_t idle_ms = absl::ToInt64Milliseconds(limits.max_connection_idle);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              idle_ms <= 0 || idle_ms > INT_MAX ? INT_MAX
                                                                : static_cast<int>(idle_ms));
  // Watches are long and often idle: let clients keep them alive with HTTP/2
  // pings (every 10 s at most, also with no call open) to find half-open
  // connections; more often is abuse, answered with GOAWAY "too_many_pings".
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              static_cast<int>(absl::ToInt64Milliseconds(kMinClientPingInterval)));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, kMaxPingStrikes);
}

}  // namespace virtgate
