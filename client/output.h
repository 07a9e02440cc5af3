// Text renderings of virtgate messages for virtgatectl: a table for domain
// listings, aligned "key: value" lines for single messages, and JSON.
// Internal to the CLI (not part of the public client library API). All
// functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// Lower-case state name without the enum prefix: "running", "shutoff", ...
// ("unspecified" for DOMAIN_STATE_UNSPECIFIED, the number for unknown values
// from a newer server).
std::string DomainStateName(v1::DomainState state);

// Inverse of DomainStateName for user input (any case). Rejects
// "unspecified", which the server refuses as a filter.
bool ParseDomainStateName(absl::string_view name, v1::DomainState* state);

// The names ParseDomainStateName accepts, "nostate|running|...", in enum order.
std::string DomainStateNames();

// Lower-case lifecycle event type without the enum prefix: "started",
// "stopped", ... (the number for unknown values from a newer server).
std::string LifecycleEventTypeName(v1::LifecycleEventType type);

// Inverse of LifecycleEventTypeName for user input (any case). Rejects
// "unspecified", which the server refuses as a filter.
bool ParseLifecycleEventTypeName(absl::string_view name, v1::LifecycleEventType* type);

// The names ParseLifecycleEventTypeName accepts, "defined|undefined|...", in
// enum order.
std::string LifecycleEventTypeNames();

// One watch message as one line ending in '\n', starting with its time
// (UTC, RFC 3339 with milliseconds), fields two spaces apart:
//   2026-11-26T17:20:01.123Z  web1  STARTED/booted  seq=42
//   2026-11-26T17:20:01.123Z  web1  STOPPED/destroyed (synthetic)  seq=43
//   2026-11-26T17:20:01.123Z  web1  INITIAL running  seq=41
//   2026-11-26T17:20:01.123Z  -- synced (seq=41) --
//   2026-11-26T17:20:01.123Z  -- libvirt connection LOST: REASON --
//   2026-11-26T17:20:01.123Z  -- libvirt connection RESTORED --
// A domain without a name shows its UUID.
std::string FormatWatchLine(const v1::WatchLifecycleResponse& message);

// Binary-prefixed size with one decimal from KiB: "512 KiB", "2.0 GiB".
std::string HumanKib(uint64_t kib);

// Columns NAME, UUID, ID, STATE, VCPUS, MEMORY, each as wide as its widest
// cell; ID is "-" for inactive domains, a stale domain's STATE ends in
// " (stale)". Always has the header line; every line ends in '\n'.
std::string FormatDomainTable(const std::vector<v1::Domain>& domains);

// Every field of the message as one aligned "name: value" line, in field
// order, nested messages as "parent.child". Names are the proto field names
// (as in the JSON output); sizes and durations carry a readable form too.
std::string FormatDomain(const v1::Domain& domain);
std::string FormatHostInfo(const v1::HostInfo& info);

// Indented JSON with proto field names and default values printed, ending
// in one '\n'.
absl::StatusOr<std::string> FormatJson(const google::protobuf::Message& message);

// Like FormatJson, but compact: the whole message on one line ending in '\n'.
absl::StatusOr<std::string> FormatJsonLine(const google::protobuf::Message& message);

// The domains of all pages as one ListDomainsResponse document,
// {"domains": [...]}, formatted like FormatJson but without the
// next_page_token, which means nothing once the pages are joined.
absl::StatusOr<std::string> FormatDomainListJson(const std::vector<v1::Domain>& domains);

}  // namespace virtgate
