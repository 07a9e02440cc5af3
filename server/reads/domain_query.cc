#include "server/reads/domain_query.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/base/quote.h"
#include "server/libvirt/domain_reads.h"
#include "server/libvirt/domain_state.h"
#include "server/reads/page_token.h"

namespace virtgate {
namespace {

absl::StatusOr<bool> IsCached(v1::ReadConsistency consistency) {
  switch (consistency) {
    case v1::READ_CONSISTENCY_UNSPECIFIED:
    case v1::READ_CONSISTENCY_FRESH:
      return false;
    case v1::READ_CONSISTENCY_CACHED:
      return true;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "consistency: ", consistency, " is not a read consistency (use "
          "READ_CONSISTENCY_FRESH or READ_CONSISTENCY_CACHED)"));
  }
}

}  // namespace

absl::Status ValidateName(absl::string_view name, absl::string_view field) {
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", Quote(name), " is longer than ",
                                                   kMaxNameBytes, " bytes"));
  }
  if (name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", Quote(name), " contains a NUL byte"));
  }
  return absl::OkStatus();
}

bool ListQuery::Matches(const v1::Domain& d, bool autostart_now) const {
  if (active.has_value() && *active != IsActiveState(d.state())) return false;
  if (persistent.has_value() && *persistent != d.persistent()) return false;
  if (autostart.has_value() && *autostart != autostart_now) return false;
  return states.empty() || states.contains(d.state());
}

absl::StatusOr<ListQuery> ParseListRequest(const v1::ListDomainsRequest& request,
                                           const PageLimits& limits, const PageTokenKey& tokens,
                                           absl::Time now) {
  ListQuery q;
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must not be negative, got ", request.page_size()));
  }
  q.page_size = request.page_size() == 0 ? limits.default_page_size : request.page_size();
  q.page_size = std::min(q.page_size, limits.max_page_size);
  for (int s : request.states()) {
    if (s == v1::DOMAIN_STATE_UNSPECIFIED || !v1::DomainState_IsValid(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("states: ", s, " is not a domain state (use DOMAIN_STATE_RUNNING, ...)"));
    }
    q.states.insert(s);
  }
  absl::StatusOr<bool> cached = IsCached(request.consistency());
  if (!cached.ok()) return cached.status();
  q.cached = *cached;
  if (request.has_active()) q.active = request.active();
  if (request.has_persistent()) q.persistent = request.persistent();
  if (request.has_autostart()) q.autostart = request.autostart();
  q.fingerprint = FilterFingerprint(request);
  q.listing_started = now;
  if (request.page_token().size() > kMaxPageTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat("page_token: ", request.page_token().size(),
                                                   " bytes, at most ", kMaxPageTokenBytes));
  }
  if (!request.page_token().empty()) {
    absl::StatusOr<PageCursor> cursor = DecodePageToken(request.page_token(), tokens);
    if (!cursor.ok()) return cursor.status();
    if (cursor->filter_fingerprint != q.fingerprint) {
      return absl::InvalidArgumentError(
          "page_token was issued for different filters; repeat the filters of the first "
          "request, or start over with an empty page_token");
    }
    q.after = std::make_pair(cursor->last_name, cursor->last_uuid);
    q.listing_started = absl::FromUnixNanos(cursor->listing_started_unix_nanos);
    q.snapshot = cursor->snapshot;
  }
  return q;
}

absl::StatusOr<GetQuery> ParseGetRequest(const v1::GetDomainRequest& request) {
  if (request.uuid().empty() == request.name().empty()) {
    return absl::InvalidArgumentError("set exactly one of uuid and name");
  }
  GetQuery q;
  absl::StatusOr<bool> cached = IsCached(request.consistency());
  if (!cached.ok()) return cached.status();
  q.cached = *cached;
  if (!request.uuid().empty()) {
    absl::StatusOr<std::string> uuid = NormalizeUuid(request.uuid());
    if (!uuid.ok()) return uuid.status();
    q.uuid = *std::move(uuid);
  } else {
    if (absl::Status s = ValidateName(request.name(), "name"); !s.ok()) return s;
    q.name = request.name();
  }
  return q;
}

absl::StatusOr<WatchFilter> ParseWatchRequest(const v1::WatchLifecycleRequest& request) {
  // The sizes first: nothing is looked at in a filter too big to take.
  if (static_cast<size_t>(request.domain_names_size()) > kMaxFilterEntries ||
      static_cast<size_t>(request.domain_uuids_size()) > kMaxFilterEntries) {
    return absl::InvalidArgumentError(absl::StrCat(
        "domain_names and domain_uuids: at most ", kMaxFilterEntries, " each, got ",
        request.domain_names_size(), " and ", request.domain_uuids_size()));
  }
  WatchFilter filter;
  for (const std::string& u : request.domain_uuids()) {
    absl::StatusOr<std::string> uuid = NormalizeUuid(u);
    if (!uuid.ok()) return uuid.status();
    filter.uuids.insert(*uuid);
  }
  for (const std::string& name : request.domain_names()) {
    if (absl::Status s = ValidateName(name, "domain_names"); !s.ok()) return s;
    filter.names.insert(name);
  }
  for (int t : request.event_types()) {
    if (t == v1::LIFECYCLE_EVENT_TYPE_UNSPECIFIED || !v1::LifecycleEventType_IsValid(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "event_types: ", t, " is not an event type (use LIFECYCLE_EVENT_TYPE_STARTED, ...)"));
    }
    filter.types.insert(t);
  }
  if (request.send_initial_state() &&
      (request.resume_after_sequence() > 0 || !request.resume_epoch().empty())) {
    return absl::InvalidArgumentError(
        "send_initial_state and resume_after_sequence exclude each other: resume, or re-list");
  }
  if (request.coalesce_ms() > kMaxCoalesceMs) {
    return absl::InvalidArgumentError(absl::StrCat("coalesce_ms must be at most ", kMaxCoalesceMs,
                                                   ", got ", request.coalesce_ms()));
  }
  if (request.resume_epoch().size() > kMaxEpochBytes) {
    return absl::InvalidArgumentError(absl::StrCat("resume_epoch: ", request.resume_epoch().size(),
                                                   " bytes, at most ", kMaxEpochBytes));
  }
  if (request.resume_after_sequence() > 0 && request.resume_epoch().empty()) {
    return absl::InvalidArgumentError("resume_after_sequence needs resume_epoch");
  }
  return filter;
}

std::string NextPageToken(const ListQuery& query, const v1::Domain& last, uint64_t snapshot,
                          const PageTokenKey& tokens) {
  return EncodePageToken({last.name(), last.uuid(), query.fingerprint,
                          absl::ToUnixNanos(query.listing_started), snapshot},
                         tokens);
}

}  // namespace virtgate
