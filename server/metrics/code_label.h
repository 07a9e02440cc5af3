// The status-code label values of virtgate's metrics: gRPC's code names as
// grpc-ecosystem/go-grpc-prometheus spells them ("OK", "NotFound",
// "ResourceExhausted"), the spelling gRPC dashboards and alerts expect.
// absl and gRPC number their codes alike, so one table serves both.
#pragma once

#include "absl/strings/string_view.h"

namespace virtgate {

// "Unknown" for a number outside 0..16.
absl::string_view CodeLabel(int code);

}  // namespace virtgate
