// Quote: request input as it may appear in a message. Error messages go
// back to the client in gRPC's status (a header): an unbounded copy of a
// 100,000-byte name makes clients on gRPC's C core reject the whole
// response ("received initial metadata size exceeds limit") and report
// RESOURCE_EXHAUSTED instead of the real error. So input is shortened to
// `max_bytes`, with its length said, and escaped (control characters, quotes,
// non-ASCII bytes) so that it reads as one line.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace virtgate {

// "\"ab\\x01c\"", or "\"abc...\" (100000 bytes)" when cut.
std::string Quote(absl::string_view input, size_t max_bytes = 64);

// A whole message (ours or libvirt's, which may echo input) made safe for a
// status: control characters escaped and at most `max_bytes` kept.
std::string BoundMessage(absl::string_view message, size_t max_bytes = 1024);

}  // namespace virtgate
