#include "server/metrics/code_label.h"

namespace virtgate {

absl::string_view CodeLabel(int code) {
  static constexpr absl::string_view kNames[] = {
      "OK",       "Canceled",          "Unknown",          "InvalidArgument",
      "DeadlineExceeded", "NotFound",  "AlreadyExists",    "PermissionDenied",
      "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
      "Unimplemented", "Internal",     "Unavailable",      "DataLoss",
      "Unauthenticated"};
  if (code < 0 || code >= static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) return "Unknown";
  return kNames[code];
}

}  // namespace virtgate
