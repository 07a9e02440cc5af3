// Fuzzes the checks a request passes at the RPC edge before any work is
// queued (server/reads/domain_query.h): the input is read as each of
// ListDomainsRequest, GetDomainRequest and WatchLifecycleRequest, in the
// binary wire format and in protobuf text format, and every request that
// parses is checked.
//
// Invariants, besides no crash, leak or UB:
// - a refusal is INVALID_ARGUMENT; its message needs no cutting (at most
//   BoundMessage's 1,024 bytes: request input is quoted short where it is
//   said, quote.h) and has no raw control character, so the status a client
//   gets (ToGrpcStatus) is that message unchanged;
// - an accepted request is within the limits hypervisor.proto documents;
// - a request is refused only for a documented reason, and a GetDomain or
//   WatchLifecycle request within the documented limits is accepted;
// - the next page's token, issued after an accepted one, is accepted with
//   the same request.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "server/reads/domain_query.h"
#include "server/reads/page_token.h"
#include "server/rpc/grpc_status.h"
#include "tests/fuzz/fuzz_check.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {
namespace {

using fuzz::Require;

constexpr size_t kMessageBound = 1024;  // BoundMessage's default
const absl::Time kNow = absl::FromUnixSeconds(1767225600);

void CheckRefusal(const absl::Status& status) {
  Require(status.code() == absl::StatusCode::kInvalidArgument, "a refusal is INVALID_ARGUMENT");
  Require(!status.message().empty(), "a refusal says why");
  Require(status.message().size() <= kMessageBound, "a refusal's message needs no cutting");
  Require(fuzz::HasNoControlCharacters(status.message()),
          "a refusal's message has no raw control character");
  const grpc::Status sent = ToGrpcStatus(status);
  Require(sent.error_code() == grpc::StatusCode::INVALID_ARGUMENT,
          "the client gets INVALID_ARGUMENT");
  Require(sent.error_message() == status.message(), "the client gets the message unchanged");
}

bool ValidConsistency(int c) {
  return c == v1::READ_CONSISTENCY_UNSPECIFIED || c == v1::READ_CONSISTENCY_FRESH ||
         c == v1::READ_CONSISTENCY_CACHED;
}

bool ValidName(const std::string& name) {
  return name.size() <= kMaxNameBytes && name.find('\0') == std::string::npos;
}

// The UUID forms GetDomainRequest documents: 32 hex digits, any case, with
// or without dashes. Written apart from NormalizeUuid on purpose.
bool ValidUuid(const std::string& text) {
  const std::string hex = absl::StrReplaceAll(text, {{"-", ""}});
  if (hex.size() != 32) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// 8-4-4-4-12 lower-case hex digits.
bool Canonical(const std::string& uuid) {
  if (uuid.size() != 36) return false;
  for (size_t i = 0; i < uuid.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (uuid[i] == '-')) return false;
    if (!dash && !(absl::ascii_isdigit(uuid[i]) || (uuid[i] >= 'a' && uuid[i] <= 'f'))) {
      return false;
    }
  }
  return true;
}

void CheckList(const v1::ListDomainsRequest& request) {
  const PageLimits limits;
  absl::StatusOr<ListQuery> query = ParseListRequest(request, limits, fuzz::FuzzTokenKey(), kNow);
  bool bad_state = false;
  for (int s : request.states()) {
    bad_state = bad_state || s == v1::DOMAIN_STATE_UNSPECIFIED || !v1::DomainState_IsValid(s);
  }
  if (!query.ok()) {
    CheckRefusal(query.status());
    // A token that does not decode, or was issued for other filters, is
    // the one reason not visible in the request itself.
    Require(request.page_size() < 0 || bad_state || !ValidConsistency(request.consistency()) ||
                !request.page_token().empty(),
            "ListDomains is refused only for a documented reason");
    return;
  }
  Require(request.page_size() >= 0, "no negative page_size is accepted");
  const int want = request.page_size() == 0 ? limits.default_page_size
                                            : std::min(request.page_size(), limits.max_page_size);
  Require(query->page_size == want, "page_size: 0 is the default, larger is capped");
  Require(!bad_state, "only real domain states are accepted as filters");
  for (int s : request.states()) Require(query->states.contains(s), "every state filter is kept");
  Require(query->states.size() <= static_cast<size_t>(request.states_size()),
          "no state filter is made up");
  Require(ValidConsistency(request.consistency()), "only known consistencies are accepted");
  Require(query->cached == (request.consistency() == v1::READ_CONSISTENCY_CACHED),
          "CACHED and only CACHED reads the cache");
  Require(query->active == (request.has_active() ? std::optional<bool>(request.active())
                                                 : std::nullopt),
          "the active filter is as asked");
  Require(query->persistent == (request.has_persistent()
                                    ? std::optional<bool>(request.persistent())
                                    : std::nullopt),
          "the persistent filter is as asked");
  Require(query->autostart == (request.has_autostart() ? std::optional<bool>(request.autostart())
                                                       : std::nullopt),
          "the autostart filter is as asked");
  Require(query->fingerprint == FilterFingerprint(request), "the filters' fingerprint is kept");
  Require(request.page_token().size() <= kMaxPageTokenBytes, "no page_token over the limit");
  Require(query->after.has_value() == !request.page_token().empty(),
          "a page_token, and only a page_token, sets the position");
  if (!query->after.has_value()) {
    Require(query->listing_started == kNow && query->snapshot == 0,
            "a first page starts a listing now");
    return;
  }
  // The server's next token, issued after the position this one names.
  v1::Domain last;
  last.set_name(query->after->first);
  last.set_uuid(query->after->second);
  v1::ListDomainsRequest next = request;
  next.set_page_token(NextPageToken(*query, last, query->snapshot, fuzz::FuzzTokenKey()));
  absl::StatusOr<ListQuery> again = ParseListRequest(next, limits, fuzz::FuzzTokenKey(), kNow + absl::Seconds(1));
  Require(again.ok(), "a token issued after an accepted one is accepted");
  Require(again->after == query->after && again->snapshot == query->snapshot &&
              again->listing_started == query->listing_started,
          "a re-issued token names the same position, snapshot and start");
}

void CheckGet(const v1::GetDomainRequest& request) {
  absl::StatusOr<GetQuery> query = ParseGetRequest(request);
  const bool documented = request.uuid().empty() != request.name().empty() &&
                          ValidConsistency(request.consistency()) &&
                          (request.uuid().empty() ? ValidName(request.name())
                                                  : ValidUuid(request.uuid()));
  if (!query.ok()) {
    CheckRefusal(query.status());
    Require(!documented, "a GetDomain request within the documented limits is accepted");
    return;
  }
  Require(documented, "an accepted GetDomain request is within the documented limits");
  Require(query->cached == (request.consistency() == v1::READ_CONSISTENCY_CACHED),
          "CACHED and only CACHED reads the cache");
  if (!request.uuid().empty()) {
    Require(query->name.empty() && Canonical(query->uuid), "a UUID is looked up canonical");
    Require(absl::StrReplaceAll(query->uuid, {{"-", ""}}) ==
                absl::AsciiStrToLower(absl::StrReplaceAll(request.uuid(), {{"-", ""}})),
            "the canonical UUID is the one asked for");
  } else {
    Require(query->uuid.empty() && query->name == request.name(), "a name is looked up as given");
  }
}

void CheckWatch(const v1::WatchLifecycleRequest& request) {
  absl::StatusOr<WatchFilter> filter = ParseWatchRequest(request);
  bool documented =
      static_cast<size_t>(request.domain_names_size()) <= kMaxFilterEntries &&
      static_cast<size_t>(request.domain_uuids_size()) <= kMaxFilterEntries &&
      request.coalesce_ms() <= kMaxCoalesceMs && request.resume_epoch().size() <= kMaxEpochBytes &&
      !(request.send_initial_state() &&
        (request.resume_after_sequence() > 0 || !request.resume_epoch().empty())) &&
      !(request.resume_after_sequence() > 0 && request.resume_epoch().empty());
  for (const std::string& u : request.domain_uuids()) documented = documented && ValidUuid(u);
  for (const std::string& n : request.domain_names()) documented = documented && ValidName(n);
  for (int t : request.event_types()) {
    documented = documented && t != v1::LIFECYCLE_EVENT_TYPE_UNSPECIFIED &&
                 v1::LifecycleEventType_IsValid(t);
  }
  if (!filter.ok()) {
    CheckRefusal(filter.status());
    Require(!documented, "a WatchLifecycle request within the documented limits is accepted");
    return;
  }
  Require(documented, "an accepted WatchLifecycle request is within the documented limits");
  for (const std::string& u : filter->uuids) Require(Canonical(u), "filter UUIDs are canonical");
  Require(filter->uuids.size() <= static_cast<size_t>(request.domain_uuids_size()),
          "no UUID filter is made up");
  const absl::flat_hash_set<std::string> names(request.domain_names().begin(),
                                               request.domain_names().end());
  Require(filter->names == names, "the name filter is the names asked for");
  const absl::flat_hash_set<int> types(request.event_types().begin(),
                                       request.event_types().end());
  Require(filter->types == types, "the type filter is the types asked for");
}

// Text-format errors are expected on most inputs; nobody needs to read them.
class SilentErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
};

template <typename Request>
void CheckBoth(absl::string_view input, void (*check)(const Request&)) {
  Request request;
  if (request.ParseFromArray(input.data(), static_cast<int>(input.size()))) check(request);
  request.Clear();
  SilentErrors errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (parser.ParseFromString(std::string(input), &request)) check(request);
}

}  // namespace
}  // namespace virtgate

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs a string field's invalid UTF-8 on every such input.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  virtgate::CheckBoth<virtgate::v1::ListDomainsRequest>(input, virtgate::CheckList);
  virtgate::CheckBoth<virtgate::v1::GetDomainRequest>(input, virtgate::CheckGet);
  virtgate::CheckBoth<virtgate::v1::WatchLifecycleRequest>(input, virtgate::CheckWatch);
  return 0;
}
