// The one place internal absl::Status becomes a grpc::Status (at the RPC edge).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace virtgate {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace virtgate
