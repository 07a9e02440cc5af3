// Turning libvirt's thread-local last error into absl::Status, and routing
// libvirt's own error printing into our log.
//
// Call LastLibvirtError() on the same thread, right after the libvirt call
// that failed: virGetLastError() is per thread and the next call resets it.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace virtgate {

// Maps a virErrorNumber (and the virErrorDomain it came from) to a code:
// no such object -> NOT_FOUND, invalid argument -> INVALID_ARGUMENT,
// operation invalid -> FAILED_PRECONDITION, access -> PERMISSION_DENIED,
// authentication -> UNAUTHENTICATED, connection/RPC -> UNAVAILABLE,
// unsupported -> UNIMPLEMENTED, anything else -> INTERNAL.
absl::StatusCode MapLibvirtErrorCode(int error_number, int error_domain);

// A status for the libvirt call that just failed on this thread:
// "<context>: <libvirt message> (libvirt error <n>)". If libvirt recorded no
// error, returns INTERNAL saying so. Resets the thread's libvirt error.
absl::Status LastLibvirtError(absl::string_view context);

// Replaces libvirt's default handler (which prints every error to stderr) with
// one that logs at debug level: errors reach users as statuses instead.
// Call once, before any libvirt connection is opened.
void RouteLibvirtErrorsToLog();

}  // namespace virtgate
