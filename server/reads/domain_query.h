// The reads a client asked for, validated once, at the RPC edge, before any
// work is queued: a ListDomains page (filters, position, size, consistency),
// a GetDomain lookup, or a WatchLifecycle request's filters. What is invalid
// is INVALID_ARGUMENT here and never reaches a worker or the event hub.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/state/event_hub.h"
#include "server/reads/page_token_key.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// Limits on what a request may carry (documented next to the fields in
// hypervisor.proto). Each violation is INVALID_ARGUMENT naming the limit.
inline constexpr size_t kMaxNameBytes = 1024;      // a domain name
inline constexpr size_t kMaxFilterEntries = 1000;  // names, or UUIDs, in one watch filter
inline constexpr size_t kMaxPageTokenBytes = 4096;
inline constexpr size_t kMaxEpochBytes = 64;
inline constexpr uint32_t kMaxCoalesceMs = 60000;

// A domain name from a request (`field` names it in the message): at most
// kMaxNameBytes, no NUL (libvirt would read it cut at the NUL).
absl::Status ValidateName(absl::string_view name, absl::string_view field);

struct PageLimits {
  int default_page_size = 500;
  int max_page_size = 5000;
};

struct ListQuery {
  std::optional<bool> active;
  std::optional<bool> persistent;
  std::optional<bool> autostart;
  absl::flat_hash_set<int> states;  // v1::DomainState values; empty: all
  // After this (name, uuid): the previous page's last domain.
  std::optional<std::pair<std::string, std::string>> after;
  int page_size = 500;
  bool cached = false;
  // When the listing's first page arrived (a later page's token says).
  absl::Time listing_started;
  uint64_t snapshot = 0;  // the listing's snapshot (a later page's token says)
  uint64_t fingerprint = 0;  // of the filters, for the next token

  // Whether `d` passes the filters, with `autostart` as given (FRESH reads
  // it from libvirt) or the record's own.
  bool Matches(const v1::Domain& d, bool autostart) const;
  bool Matches(const v1::Domain& d) const { return Matches(d, d.autostart()); }
  bool filtered() const { return active || persistent || autostart || !states.empty(); }
};

struct GetQuery {
  std::string uuid;  // normalized; or
  std::string name;
  bool cached = false;
};

// A page_token is decoded with `tokens`, the key of this server process.
absl::StatusOr<ListQuery> ParseListRequest(const v1::ListDomainsRequest& request,
                                           const PageLimits& limits, const PageTokenKey& tokens,
                                           absl::Time now);
absl::StatusOr<GetQuery> ParseGetRequest(const v1::GetDomainRequest& request);
// The hub's filter for a watch (UUIDs normalized), once the whole request
// is found valid: filter sizes, names, event types, coalesce_ms, and the
// resume fields against send_initial_state.
absl::StatusOr<WatchFilter> ParseWatchRequest(const v1::WatchLifecycleRequest& request);

// The next page's token, after `last`, served from `snapshot`, signed with
// `tokens`.
std::string NextPageToken(const ListQuery& query, const v1::Domain& last, uint64_t snapshot,
                          const PageTokenKey& tokens);

}  // namespace virtgate
