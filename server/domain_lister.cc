#include "server/domain_lister.h"

#include <libvirt/virterror.h>

#include <algorithm>
#include <thread>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/domain_state.h"
#include "server/libvirt_errors.h"
#include "server/log.h"
#include "server/page_token.h"

namespace virtgate {

absl::StatusOr<std::string> NormalizeUuid(absl::string_view text) {
  std::string hex;
  hex.reserve(32);
  for (char c : text) {
    if (c == '-') continue;
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) || hex.size() == 32) {
      hex.clear();
      break;
    }
    hex.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
  }
  if (hex.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed uuid \"", text, "\": want 32 hex digits, e.g. "
        "6695eb01-f6a4-8304-79aa-97f2502e193f"));
  }
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20));
}

namespace {

// libvirt refuses to send more than REMOTE_DOMAIN_LIST_MAX (16,384) domains in
// one reply; both ends report it as "too many ... domains".
bool IsTooManyDomains(const absl::Status& status) {
  return absl::StrContains(absl::AsciiStrToLower(status.message()), "too many");
}

// Flag pairs that partition the domains; each later pair is tried only when
// the earlier ones are already set (or still give too many).
constexpr std::pair<unsigned int, unsigned int> kSplits[] = {
    {VIR_CONNECT_LIST_DOMAINS_ACTIVE, VIR_CONNECT_LIST_DOMAINS_INACTIVE},
    {VIR_CONNECT_LIST_DOMAINS_PERSISTENT, VIR_CONNECT_LIST_DOMAINS_TRANSIENT},
    {VIR_CONNECT_LIST_DOMAINS_AUTOSTART, VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART},
    {VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT, VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT},
    {VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE, VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE},
};

absl::Status ListInto(virConnectPtr conn, unsigned int flags,
                      absl::flat_hash_map<std::string, DomainHandle>* out) {
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn, &doms, flags);
  if (n >= 0) {
    for (DomainHandle& d : AdoptDomainArray(doms, n)) {
      std::string uuid = DomainUuid(d.get());
      (*out)[std::move(uuid)] = std::move(d);  // a later call's view wins
    }
    return absl::OkStatus();
  }
  absl::Status status = LastLibvirtError("virConnectListAllDomains");
  // The message may be translated (libvirtd's locale); an RPC-level failure
  // on a connection that is still alive is the size limit too.
  const bool too_many = IsTooManyDomains(status) ||
                        (status.code() == absl::StatusCode::kUnavailable &&
                         virConnectIsAlive(conn) == 1);
  if (!too_many) return status;
  for (const auto& [a, b] : kSplits) {
    if (flags & (a | b)) continue;
    // a, b, then a again: a domain that moves from one side to the other once
    // while we list is still seen by one of the calls.
    for (unsigned int part : {a, b, a}) {
      if (absl::Status s = ListInto(conn, flags | part, out); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "more domains match than libvirt can return in one call and no filter splits them "
      "further (", status.message(), ")"));
}

unsigned int ListFlags(const v1::ListDomainsRequest& req) {
  unsigned int flags = 0;
  if (req.has_active()) {
    flags |= req.active() ? VIR_CONNECT_LIST_DOMAINS_ACTIVE : VIR_CONNECT_LIST_DOMAINS_INACTIVE;
  }
  if (req.has_persistent()) {
    flags |= req.persistent() ? VIR_CONNECT_LIST_DOMAINS_PERSISTENT
                              : VIR_CONNECT_LIST_DOMAINS_TRANSIENT;
  }
  if (req.has_autostart()) {
    flags |= req.autostart() ? VIR_CONNECT_LIST_DOMAINS_AUTOSTART
                             : VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART;
  }
  for (int s : req.states()) {
    switch (s) {
      case v1::DOMAIN_STATE_RUNNING: flags |= VIR_CONNECT_LIST_DOMAINS_RUNNING; break;
      case v1::DOMAIN_STATE_PAUSED: flags |= VIR_CONNECT_LIST_DOMAINS_PAUSED; break;
      case v1::DOMAIN_STATE_SHUTOFF: flags |= VIR_CONNECT_LIST_DOMAINS_SHUTOFF; break;
      default: flags |= VIR_CONNECT_LIST_DOMAINS_OTHER; break;
    }
  }
  return flags;
}

}  // namespace

absl::StatusOr<std::vector<DomainHandle>> ListAllDomains(virConnectPtr conn, unsigned int flags) {
  absl::flat_hash_map<std::string, DomainHandle> by_uuid;
  if (absl::Status s = ListInto(conn, flags, &by_uuid); !s.ok()) return s;
  std::vector<DomainHandle> out;
  out.reserve(by_uuid.size());
  for (auto& [uuid, dom] : by_uuid) out.push_back(std::move(dom));
  return out;
}

// What one bulk stats record says; `has_*` where the driver reported it.
struct DomainLister::Stats {
  std::string uuid;
  int state = VIR_DOMAIN_NOSTATE;
  int reason = 0;
  bool has_state = false;
  std::optional<uint64_t> cpu_time_ns;
  std::optional<uint64_t> balloon_current_kib;
  std::optional<uint64_t> balloon_maximum_kib;
  std::optional<uint32_t> vcpu_current;
};

namespace {

void ParseRecord(const virDomainStatsRecord& rec, std::string* uuid, int* state, int* reason,
                 bool* has_state, std::optional<uint64_t>* cpu, std::optional<uint64_t>* cur,
                 std::optional<uint64_t>* max, std::optional<uint32_t>* vcpus) {
  *uuid = DomainUuid(rec.dom);
  for (int i = 0; i < rec.nparams; ++i) {
    const virTypedParameter& p = rec.params[i];
    if (std::strcmp(p.field, "state.state") == 0 && p.type == VIR_TYPED_PARAM_INT) {
      *state = p.value.i;
      *has_state = true;
    } else if (std::strcmp(p.field, "state.reason") == 0 && p.type == VIR_TYPED_PARAM_INT) {
      *reason = p.value.i;
    } else if (std::strcmp(p.field, "cpu.time") == 0 && p.type == VIR_TYPED_PARAM_ULLONG) {
      *cpu = p.value.ul;
    } else if (std::strcmp(p.field, "balloon.current") == 0 && p.type == VIR_TYPED_PARAM_ULLONG) {
      *cur = p.value.ul;
    } else if (std::strcmp(p.field, "balloon.maximum") == 0 && p.type == VIR_TYPED_PARAM_ULLONG) {
      *max = p.value.ul;
    } else if (std::strcmp(p.field, "vcpu.current") == 0 && p.type == VIR_TYPED_PARAM_UINT) {
      *vcpus = p.value.ui;
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<DomainLister::Stats>> DomainLister::BulkStats(
    const std::vector<virDomainPtr>& doms, std::atomic<bool>* nowait, unsigned int groups) {
  std::vector<Stats> out;
  if (doms.empty()) return out;
  std::vector<virDomainPtr> list = doms;
  list.push_back(nullptr);  // virDomainListGetStats wants a NULL-terminated array
  virDomainStatsRecordPtr* records = nullptr;
  int n = -1;
  if (nowait->load(std::memory_order_relaxed)) {
    n = virDomainListGetStats(list.data(), groups, &records,
                              VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
    if (n < 0) {
      absl::Status s = LastLibvirtError("virDomainListGetStats");
      // Only an "unsupported flags" refusal means the driver lacks NOWAIT.
      if (s.code() != absl::StatusCode::kInvalidArgument ||
          !absl::StrContains(absl::AsciiStrToLower(s.message()), "flag")) {
        return s;
      }
      LogInfo("driver rejects NOWAIT bulk stats; listing without it (", s.message(), ")");
      nowait->store(false);
    }
  }
  if (n < 0) {
    n = virDomainListGetStats(list.data(), groups, &records, 0);
    if (n < 0) return LastLibvirtError("virDomainListGetStats");
  }
  DomainStatsList owned(records);
  out.resize(n);
  for (int i = 0; i < n; ++i) {
    Stats& s = out[i];
    ParseRecord(*records[i], &s.uuid, &s.state, &s.reason, &s.has_state, &s.cpu_time_ns,
                &s.balloon_current_kib, &s.balloon_maximum_kib, &s.vcpu_current);
  }
  return out;
}

absl::StatusOr<std::vector<DomainLister::Stats>> DomainLister::BulkStatsAvoidingStuck(
    const std::vector<virDomainPtr>& doms, absl::Time deadline,
    absl::flat_hash_set<std::string>* stuck, bool* left_behind) {
  *left_behind = false;
  if (doms.empty()) return std::vector<Stats>{};
  if (absl::Now() >= deadline) return absl::DeadlineExceededError("deadline exceeded");
  // Shared with the thread making the call, which may outlive this listing
  // (and the lister): it holds its own domain references.
  struct Pending {
    std::shared_ptr<BusyDomains> busy;  // outlives `calls` (declared first)
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<std::vector<Stats>> result ABSL_GUARDED_BY(mu);
    // The domains found stuck: busy until the call returns.
    std::vector<BusyDomains::Call> calls ABSL_GUARDED_BY(mu);
  };
  auto pending = std::make_shared<Pending>();
  pending->busy = busy_;
  virConnectPtr conn = virDomainGetConnect(doms.front());
  // The call holds an admission of its own on its connection, so that if it
  // is left behind, nobody else is handed the connection while it runs.
  std::optional<ConnectionPool::Lease> hold;
  if (hooks_.hold) hold = hooks_.hold(conn);
  std::vector<virDomainPtr> refs = doms;
  for (virDomainPtr d : refs) virDomainRef(d);  // each also holds its connection
  std::thread([pending, refs, nowait = nowait_supported_, hold = std::move(hold)]() mutable {
    absl::StatusOr<std::vector<Stats>> result = BulkStats(refs, nowait.get(), kAllGroups);
    for (virDomainPtr d : refs) virDomainFree(d);
    hold.reset();
    std::vector<BusyDomains::Call> release;  // no longer busy, after the lock
    absl::MutexLock lock(&pending->mu);
    pending->result = std::move(result);
    pending->done = true;
    release.swap(pending->calls);
  }).detach();

  // A healthy host answers within about 3 ms per running QEMU guest.
  const absl::Time now = absl::Now();
  absl::Duration budget = std::max(absl::Milliseconds(500),
                                  absl::Milliseconds(10) * static_cast<int64_t>(doms.size()));
  if (deadline != absl::InfiniteFuture()) budget = std::min(budget, (deadline - now) / 2);
  {
    absl::MutexLock lock(&pending->mu);
    if (pending->mu.AwaitWithDeadline(absl::Condition(&pending->done), now + budget)) {
      return std::move(pending->result);
    }
  }
  // Not back: is a domain's monitor stuck, or is libvirt just slow? Never
  // ask on this connection: libvirt's client serves its other calls only at
  // its next wakeup, and two threads calling on one connection is what
  // libvirt 9.0's client may crash on should it die (see ConnectionPool).
  // Look (and read again) on another one, and have the pool stop handing
  // this one out (the event connection cannot be retired).
  const int64_t occupied_ms =
      std::min<int64_t>(500, absl::ToInt64Milliseconds(budget) / 2);
  std::optional<ConnectionPool::Lease> moved;  // outlives moved_doms
  std::vector<DomainHandle> moved_doms;
  if (hooks_.retire && hooks_.acquire) {
    hooks_.retire(conn);
    // No longer than the budget: the caller's deadline is for the listing.
    absl::StatusOr<ConnectionPool::Lease> lease =
        hooks_.acquire(std::min(deadline, absl::Now() + budget));
    if (lease.ok() && lease->get() != conn) moved = std::move(*lease);
  }
  std::vector<virDomainPtr> others;
  std::vector<std::string> found;
  if (moved) {
    for (virDomainPtr d : doms) {
      DomainHandle h(virDomainLookupByUUIDString(moved->get(), DomainUuid(d).c_str()));
      if (!h) {
        virResetLastError();  // undefined meanwhile
        continue;
      }
      virDomainControlInfo info;
      if (virDomainGetControlInfo(h.get(), &info, 0) < 0) {
        virResetLastError();
        others.push_back(h.get());
      } else if (info.state == VIR_DOMAIN_CONTROL_OCCUPIED &&
                 static_cast<int64_t>(info.stateTime) >= occupied_ms) {
        found.push_back(DomainUuid(h.get()));
        LogWarning("domain ", DomainName(h.get()), ": its QEMU has not answered for ",
                   info.stateTime, " ms; reported stale until it does");
      } else {
        others.push_back(h.get());
      }
      moved_doms.push_back(std::move(h));
    }
  }
  {
    absl::MutexLock lock(&pending->mu);
    if (pending->done) return std::move(pending->result);  // came back meanwhile
    if (found.empty()) {
      // Just slow, or no other connection to look from: wait for it, as
      // long as the caller does.
      if (pending->mu.AwaitWithDeadline(absl::Condition(&pending->done), deadline)) {
        return std::move(pending->result);
      }
      // Still stuck, cause unknown: every domain it reads is busy until it
      // returns, so retries report them stale instead of stacking up calls.
      for (virDomainPtr d : doms) {
        pending->calls.push_back(busy_->Begin(DomainUuid(d), absl::InfinitePast()));
      }
      *left_behind = true;
      return absl::DeadlineExceededError("libvirt did not return domain stats by the deadline");
    }
    for (const std::string& uuid : found) {
      pending->calls.push_back(busy_->Begin(uuid, absl::InfinitePast()));
      stuck->insert(uuid);
    }
  }
  *left_behind = true;
  return BulkStats(others, nowait_supported_.get(), kAllGroups);
}

std::optional<v1::Domain> DomainLister::Describe(virDomainPtr dom, const std::string& uuid,
                                                 const Stats* stats, bool refresh_facts,
                                                 absl::Time deadline, bool need_facts,
                                                 bool may_call) {
  refresh_facts = refresh_facts && may_call;
  v1::Domain d;
  d.set_uuid(uuid);
  d.set_name(DomainName(dom));
  d.set_id(DomainId(dom));

  std::optional<DomainFacts> facts;
  // Bulk stats that carry vCPUs and both memory figures (QEMU's do) leave
  // nothing for the facts to add to a listing: no per-domain round trips.
  const bool stats_complete = stats != nullptr && stats->has_state && stats->vcpu_current &&
                              stats->balloon_current_kib && stats->balloon_maximum_kib;
  if (!refresh_facts && stats_complete) {
    facts = DomainFacts{};
    facts->name = d.name();
    facts->id = d.id();
    facts->state = stats->state;
    facts->vcpus = *stats->vcpu_current;
    facts->memory_kib = *stats->balloon_current_kib;
    facts->max_memory_kib = *stats->balloon_maximum_kib;
    facts->fetched = absl::Now();
    cache_->Remember(uuid, *facts);  // what a stale report falls back on
  } else if (!refresh_facts) {
    facts = cache_->Lookup(uuid, d.name(), d.id());
  }
  if (!facts && !need_facts && stats != nullptr && stats->has_state) {
    // States only (a resync): the bulk stats said enough.
  } else if (!facts && (!may_call || busy_->IsBusy(uuid))) {
    // A call on it, or on its connection, is stuck: do not queue another
    // behind it.
    facts = cache_->LastKnown(uuid);
    d.set_stale(true);
  } else if (!facts) {
    absl::StatusOr<DomainFacts> fetched;
    {
      BusyDomains::Call call = busy_->Begin(uuid, deadline);
      fetched = cache_->Fetch(dom, uuid);
    }
    if (fetched.ok()) {
      facts = *fetched;
    } else if (fetched.status().code() == absl::StatusCode::kNotFound) {
      return std::nullopt;  // undefined since it was listed
    } else {
      // Cannot read it now: report the last known facts, marked stale,
      // rather than leave it out (a missing domain looks deleted).
      LogDebug("domain ", d.name(), " reported stale: ", fetched.status().message());
      facts = cache_->LastKnown(uuid);
      d.set_stale(true);
    }
  }
  int state = VIR_DOMAIN_NOSTATE;
  int reason = 0;
  if (stats != nullptr && stats->has_state) {
    state = stats->state;
    reason = stats->reason;
  } else {
    d.set_stale(true);
    if (facts) state = facts->state;
  }
  d.set_state(ToProtoState(state));
  d.set_state_reason(StateReasonName(state, reason));
  d.set_state_reason_code(reason);
  if (facts) {
    d.set_persistent(facts->persistent);
    d.set_autostart(facts->autostart);
    d.set_vcpus(facts->vcpus);
    d.set_memory_kib(facts->memory_kib);
    d.set_max_memory_kib(facts->max_memory_kib);
  }
  if (stats != nullptr) {
    // Live values from bulk stats win over cached ones where the driver has them.
    if (stats->vcpu_current) d.set_vcpus(*stats->vcpu_current);
    if (stats->balloon_current_kib) d.set_memory_kib(*stats->balloon_current_kib);
    if (stats->balloon_maximum_kib) d.set_max_memory_kib(*stats->balloon_maximum_kib);
    // Only a running domain has used CPU time of its own: for an inactive
    // one, QEMU's driver reports libvirtd's own CPU time.
    const bool active = state != VIR_DOMAIN_SHUTOFF && state != VIR_DOMAIN_CRASHED &&
                        state != VIR_DOMAIN_NOSTATE && d.id() != 0;
    if (stats->cpu_time_ns && active) d.set_cpu_time_ns(*stats->cpu_time_ns);
  }
  return d;
}

absl::Status DomainLister::ValidateListRequest(const v1::ListDomainsRequest& request) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must not be negative, got ", request.page_size()));
  }
  for (int s : request.states()) {
    if (s == v1::DOMAIN_STATE_UNSPECIFIED || !v1::DomainState_IsValid(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("states: ", s, " is not a domain state (use DOMAIN_STATE_RUNNING, ...)"));
    }
  }
  if (!request.page_token().empty()) {
    absl::StatusOr<PageCursor> cursor = DecodePageToken(request.page_token());
    if (!cursor.ok()) return cursor.status();
    if (cursor->filter_fingerprint != FilterFingerprint(request)) {
      return absl::InvalidArgumentError(
          "page_token was issued for different filters; repeat the filters of the first "
          "request, or start over with an empty page_token");
    }
  }
  return absl::OkStatus();
}

absl::Status DomainLister::ValidateGetRequest(const v1::GetDomainRequest& request) {
  if (request.uuid().empty() == request.name().empty()) {
    return absl::InvalidArgumentError("set exactly one of uuid and name");
  }
  if (!request.uuid().empty()) return NormalizeUuid(request.uuid()).status();
  return absl::OkStatus();
}

absl::StatusOr<v1::ListDomainsResponse> DomainLister::List(virConnectPtr conn,
                                                           const v1::ListDomainsRequest& request,
                                                           absl::Time deadline, bool need_facts,
                                                           bool* connection_left) {
  if (connection_left != nullptr) *connection_left = false;
  if (absl::Status s = ValidateListRequest(request); !s.ok()) return s;
  std::optional<PageCursor> cursor;
  if (!request.page_token().empty()) cursor = *DecodePageToken(request.page_token());
  int page_size = request.page_size() == 0 ? options_.default_page_size : request.page_size();
  page_size = std::min(page_size, options_.max_page_size);

  const unsigned int flags = ListFlags(request);
  absl::StatusOr<std::vector<DomainHandle>> listed = ListAllDomains(conn, flags);
  if (!listed.ok()) return listed.status();

  struct Entry {
    std::string name;
    std::string uuid;
    virDomainPtr dom;
  };
  std::vector<Entry> entries;
  entries.reserve(listed->size());
  for (const DomainHandle& d : *listed) {
    entries.push_back({DomainName(d.get()), DomainUuid(d.get()), d.get()});
  }
  // persistent/autostart change without a new id, so they are not cached for
  // listings: two flagged lists (usually short) give them for every domain,
  // unless the request's own filter already pins the value.
  absl::flat_hash_set<std::string> transient, autostart;
  std::optional<bool> pinned_persistent, pinned_autostart;
  if (request.has_persistent()) pinned_persistent = request.persistent();
  if (request.has_autostart()) pinned_autostart = request.autostart();
  for (auto [pinned, flag, set] :
       {std::tuple{&pinned_persistent, VIR_CONNECT_LIST_DOMAINS_TRANSIENT, &transient},
        std::tuple{&pinned_autostart, VIR_CONNECT_LIST_DOMAINS_AUTOSTART, &autostart}}) {
    if (pinned->has_value()) continue;
    absl::StatusOr<std::vector<DomainHandle>> flagged =
        ListAllDomains(conn, flags | flag);
    if (!flagged.ok()) return flagged.status();
    for (const DomainHandle& d : *flagged) set->insert(DomainUuid(d.get()));
  }

  const bool unfiltered = flags == 0;
  if (unfiltered && !cursor) {
    std::vector<std::string> uuids;
    uuids.reserve(entries.size());
    for (const Entry& e : entries) uuids.push_back(e.uuid);
    cache_->Retain(uuids);  // forget domains that no longer exist
  }
  auto key = [](const Entry& e) { return std::tie(e.name, e.uuid); };
  std::sort(entries.begin(), entries.end(),
            [&](const Entry& a, const Entry& b) { return key(a) < key(b); });
  size_t next = 0;
  if (cursor) {
    const auto after = std::make_tuple(cursor->last_name, cursor->last_uuid);
    next = std::upper_bound(entries.begin(), entries.end(), after,
                            [&](const auto& k, const Entry& e) {
                              return k < std::make_tuple(e.name, e.uuid);
                            }) -
           entries.begin();
  }

  const absl::flat_hash_set<int> wanted_states(request.states().begin(), request.states().end());
  v1::ListDomainsResponse response;
  // Usually one pass; more only when the state filter (which libvirt's flags
  // express coarsely) drops domains from a chunk.
  while (response.domains_size() < page_size && next < entries.size()) {
    const size_t want = page_size - response.domains_size();
    const size_t end = std::min(entries.size(), next + want);
    std::vector<virDomainPtr> chunk;
    absl::flat_hash_set<std::string> busy;
    for (size_t i = next; i < end; ++i) {
      if (need_facts && busy_->IsBusy(entries[i].uuid)) {
        busy.insert(entries[i].uuid);  // stale, from what is known
      } else {
        chunk.push_back(entries[i].dom);
      }
    }
    absl::StatusOr<std::vector<Stats>> stats;
    bool left_behind = false;  // a call is still running on conn: make no more
    if (need_facts) {
      stats = BulkStatsAvoidingStuck(chunk, deadline, &busy, &left_behind);
    } else if (absl::Now() >= deadline) {
      stats = absl::DeadlineExceededError("deadline exceeded");
    } else {
      // States only: the state group is read from libvirt's own domain
      // objects (no job, no QEMU monitor), so no domain can hold it up and
      // the call needs no side thread or budget; busy domains are included.
      stats = BulkStats(chunk, nowait_supported_.get(), VIR_DOMAIN_STATS_STATE);
    }
    if (!stats.ok()) return stats.status();
    absl::flat_hash_map<std::string, const Stats*> by_uuid;
    for (const Stats& s : *stats) by_uuid[s.uuid] = &s;
    for (size_t i = next; i < end; ++i) {
      auto it = by_uuid.find(entries[i].uuid);
      const bool is_busy = busy.contains(entries[i].uuid);
      if (it == by_uuid.end() && !is_busy) continue;  // undefined between the two calls
      std::optional<v1::Domain> d =
          Describe(entries[i].dom, entries[i].uuid, is_busy ? nullptr : it->second,
                   /*refresh_facts=*/false, deadline, need_facts, !left_behind);
      if (!d) continue;
      if (!wanted_states.empty() && !wanted_states.contains(d->state())) continue;
      d->set_persistent(pinned_persistent.value_or(!transient.contains(d->uuid())));
      d->set_autostart(pinned_autostart.value_or(autostart.contains(d->uuid())));
      *response.add_domains() = std::move(*d);
    }
    next = end;
    if (left_behind) {
      // The rest goes on another connection: the next page's.
      if (connection_left != nullptr) *connection_left = true;
      break;
    }
  }
  if (next < entries.size() && next > 0) {
    // After the last domain looked at (those the filters dropped need no
    // second look).
    const Entry& last = entries[next - 1];
    response.set_next_page_token(
        EncodePageToken({last.name, last.uuid, FilterFingerprint(request)}));
  }
  return response;
}

absl::StatusOr<v1::Domain> DomainLister::Get(virConnectPtr conn,
                                             const v1::GetDomainRequest& request,
                                             absl::Time deadline) {
  if (absl::Status s = ValidateGetRequest(request); !s.ok()) return s;
  DomainHandle dom;
  if (!request.uuid().empty()) {
    const std::string uuid = *NormalizeUuid(request.uuid());
    dom.reset(virDomainLookupByUUIDString(conn, uuid.c_str()));
    if (!dom) return LastLibvirtError(absl::StrCat("domain uuid ", uuid));
  } else {
    dom.reset(virDomainLookupByName(conn, request.name().c_str()));
    if (!dom) return LastLibvirtError(absl::StrCat("domain \"", request.name(), "\""));
  }
  const std::string uuid = DomainUuid(dom.get());
  if (busy_->IsBusy(uuid)) {
    // A call on it is stuck: answer from what is known, at once.
    std::optional<v1::Domain> d = Describe(dom.get(), uuid, nullptr, false, deadline);
    if (!d) return absl::NotFoundError(absl::StrCat("domain ", uuid, " was undefined"));
    return *d;
  }
  absl::StatusOr<std::vector<Stats>> stats;
  absl::flat_hash_set<std::string> stuck;
  bool left_behind = false;
  {
    BusyDomains::Call call = busy_->Begin(uuid, deadline);
    stats = BulkStatsAvoidingStuck({dom.get()}, deadline, &stuck, &left_behind);
  }
  if (!stats.ok()) return stats.status();
  if (stuck.contains(uuid)) {
    std::optional<v1::Domain> d = Describe(dom.get(), uuid, nullptr, false, deadline,
                                           /*need_facts=*/true, /*may_call=*/false);
    if (!d) return absl::NotFoundError(absl::StrCat("domain ", uuid, " was undefined"));
    return *d;
  }
  const Stats* mine = nullptr;
  for (const Stats& s : *stats) {
    if (s.uuid == uuid) mine = &s;
  }
  // One domain: read its facts fresh (and refresh the cache with them),
  // unless a call was left running on its connection.
  std::optional<v1::Domain> d = Describe(dom.get(), uuid, mine, /*refresh_facts=*/true, deadline,
                                         /*need_facts=*/true, /*may_call=*/!left_behind);
  if (!d || mine == nullptr) {
    return absl::NotFoundError(absl::StrCat("domain ", uuid, " was undefined while being read"));
  }
  return *d;
}

absl::StatusOr<std::vector<v1::Domain>> DomainLister::ListEverything(virConnectPtr conn,
                                                                     absl::Time deadline,
                                                                     bool need_facts) {
  std::vector<v1::Domain> all;
  v1::ListDomainsRequest req;
  req.set_page_size(options_.max_page_size);
  std::optional<ConnectionPool::Lease> other;  // once a call is left behind on conn
  for (;;) {
    bool connection_left = false;
    absl::StatusOr<v1::ListDomainsResponse> page =
        List(conn, req, deadline, need_facts, &connection_left);
    if (!page.ok()) return page.status();
    for (v1::Domain& d : *page->mutable_domains()) all.push_back(std::move(d));
    if (page->next_page_token().empty()) return all;
    req.set_page_token(page->next_page_token());
    if (connection_left) {
      if (!hooks_.acquire) return absl::UnavailableError("no other libvirt connection");
      absl::StatusOr<ConnectionPool::Lease> lease = hooks_.acquire(deadline);
      if (!lease.ok()) return lease.status();
      other = std::move(*lease);
      conn = other->get();
    }
  }
}

}  // namespace virtgate
