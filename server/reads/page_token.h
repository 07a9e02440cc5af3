// ListDomains page tokens: an opaque cursor, authenticated by the server
// process that issued it.
//
// A token names the last domain of the previous page by (name, uuid), the
// listing's sort key, so the next page starts strictly after it whatever was
// defined or undefined in between: a domain that exists throughout is never
// skipped or repeated. The token also carries a fingerprint of the filters
// it was issued for, so reusing it with other filters is INVALID_ARGUMENT.
//
// It also carries when the listing's first page arrived (a FRESH listing's
// facts need only have been read since then) and which snapshot of the
// domain cache the listing is served from (ListingSnapshots).
//
// An HMAC-SHA256 with the process's PageTokenKey covers all of it. The
// cursor is not secret (it names a position in a listing the caller may
// read anyway), but the server trusts what a token says (a snapshot id, a
// start time), so only tokens it issued itself are decoded: a forged or
// altered token, or one from another server process (a restart makes a
// new key), is INVALID_ARGUMENT, and the client starts the listing over.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/reads/page_token_key.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

struct PageCursor {
  std::string last_name;
  std::string last_uuid;
  uint64_t filter_fingerprint = 0;
  int64_t listing_started_unix_nanos = 0;
  uint64_t snapshot = 0;  // the listing's ListingSnapshots id (0: none)
};

std::string EncodePageToken(const PageCursor& cursor, const PageTokenKey& key);

// INVALID_ARGUMENT for anything EncodePageToken did not produce with `key`.
absl::StatusOr<PageCursor> DecodePageToken(absl::string_view token, const PageTokenKey& key);

// Identifies the filter fields of a request (not page_size/page_token).
uint64_t FilterFingerprint(const v1::ListDomainsRequest& request);

}  // namespace virtgate
