#include "server/libvirt/domain_reads.h"

#include <libvirt/virterror.h>

#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/base/quote.h"
#include "server/base/log.h"
#include "server/libvirt/domain_state.h"
#include "server/libvirt/errors.h"

namespace virtgate {

v1::Domain DomainFromStats(const DomainStats& s) {
  v1::Domain d;
  d.set_uuid(s.uuid);
  d.set_name(s.name);
  d.set_id(s.id);
  const int state = s.state.value_or(VIR_DOMAIN_NOSTATE);
  d.set_state(ToProtoState(state));
  d.set_state_reason(StateReasonName(state, s.reason));
  d.set_state_reason_code(s.reason);
  d.set_stale(!s.state.has_value());
  return d;
}

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
        "malformed uuid ", Quote(text), ": want 32 hex digits, e.g. "
        "6695eb01-f6a4-8304-79aa-97f2502e193f"));
  }
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20));
}

namespace {

// REMOTE_DOMAIN_LIST_MAX: domains per call, both ways.
constexpr size_t kMaxDomainsPerCall = 16384;

// libvirt refuses to send more than REMOTE_DOMAIN_LIST_MAX domains in one
// reply; both ends report it as "too many ... domains". The message may be
// translated (libvirtd's locale), so an RPC-level failure on a connection
// that is still alive counts as the size limit too.
bool IsTooMany(const absl::Status& status, virConnectPtr conn) {
  return absl::StrContains(absl::AsciiStrToLower(status.message()), "too many") ||
         (status.code() == absl::StatusCode::kUnavailable && virConnectIsAlive(conn) == 1);
}

// Flag pairs that partition the domains, for virConnectListAllDomains; each
// later pair is tried only when the earlier ones are already set (or still
// give too many).
constexpr std::pair<unsigned int, unsigned int> kListSplits[] = {
    {VIR_CONNECT_LIST_DOMAINS_ACTIVE, VIR_CONNECT_LIST_DOMAINS_INACTIVE},
    {VIR_CONNECT_LIST_DOMAINS_PERSISTENT, VIR_CONNECT_LIST_DOMAINS_TRANSIENT},
    {VIR_CONNECT_LIST_DOMAINS_AUTOSTART, VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART},
    {VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT, VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT},
    {VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE, VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE},
};
// The same for virConnectGetAllDomainStats, which takes fewer filters.
constexpr std::pair<unsigned int, unsigned int> kStatsSplits[] = {
    {VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE, VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE},
    {VIR_CONNECT_GET_ALL_DOMAINS_STATS_PERSISTENT, VIR_CONNECT_GET_ALL_DOMAINS_STATS_TRANSIENT},
    {VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING |
         VIR_CONNECT_GET_ALL_DOMAINS_STATS_PAUSED,
     VIR_CONNECT_GET_ALL_DOMAINS_STATS_SHUTOFF | VIR_CONNECT_GET_ALL_DOMAINS_STATS_OTHER},
};

DomainStats ParseRecord(const virDomainStatsRecord& rec) {
  DomainStats s;
  s.uuid = DomainUuid(rec.dom);
  s.name = DomainName(rec.dom);
  s.id = DomainId(rec.dom);
  for (int i = 0; i < rec.nparams; ++i) {
    const virTypedParameter& p = rec.params[i];
    if (std::strcmp(p.field, "state.state") == 0 && p.type == VIR_TYPED_PARAM_INT) {
      s.state = p.value.i;
    } else if (std::strcmp(p.field, "state.reason") == 0 && p.type == VIR_TYPED_PARAM_INT) {
      s.reason = p.value.i;
    } else if (std::strcmp(p.field, "cpu.time") == 0 && p.type == VIR_TYPED_PARAM_ULLONG) {
      s.cpu_time_ns = p.value.ul;
    } else if (std::strcmp(p.field, "balloon.current") == 0 && p.type == VIR_TYPED_PARAM_ULLONG) {
      s.balloon_current_kib = p.value.ul;
    } else if (std::strcmp(p.field, "balloon.maximum") == 0 && p.type == VIR_TYPED_PARAM_ULLONG) {
      s.balloon_maximum_kib = p.value.ul;
    } else if (std::strcmp(p.field, "vcpu.current") == 0 && p.type == VIR_TYPED_PARAM_UINT) {
      s.vcpus = p.value.ui;
    }
  }
  return s;
}

void AppendRecords(virDomainStatsRecordPtr* records, int n, std::vector<DomainStats>* out) {
  DomainStatsList owned(records);
  for (int i = 0; i < n; ++i) out->push_back(ParseRecord(*records[i]));
}

// Keeps the last record of each domain (a later split call's view wins).
void DedupeByUuid(std::vector<DomainStats>* stats) {
  absl::flat_hash_map<std::string, size_t> last;
  for (size_t i = 0; i < stats->size(); ++i) last[(*stats)[i].uuid] = i;
  if (last.size() == stats->size()) return;
  std::vector<DomainStats> out;
  out.reserve(last.size());
  for (size_t i = 0; i < stats->size(); ++i) {
    if (last[(*stats)[i].uuid] == i) out.push_back(std::move((*stats)[i]));
  }
  stats->swap(out);
}

// Ends `call` with `result`'s status, and returns it.
template <typename T>
absl::StatusOr<T> Counted(CallCounts::Call* call, absl::StatusOr<T> result) {
  call->End(result.status());
  return result;
}
absl::Status Counted(CallCounts::Call* call, absl::Status status) {
  call->End(status);
  return status;
}

}  // namespace

template <typename Call>
int DomainReads::WithNowait(const char* procedure, Call call, virDomainStatsRecordPtr** records,
                            absl::Status* error) {
  if (nowait_.load(std::memory_order_relaxed)) {
    CallCounts::Call counted(counts_.get(), procedure);
    const int n = call(VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT, records);
    if (n >= 0) {
      counted.End(absl::StatusCode::kOk);
      return n;
    }
    absl::Status s = LastLibvirtError(procedure);
    counted.End(s);
    // Only an "unsupported flags" refusal means the driver lacks NOWAIT.
    if (s.code() != absl::StatusCode::kInvalidArgument ||
        !absl::StrContains(absl::AsciiStrToLower(s.message()), "flag")) {
      *error = s;
      return -1;
    }
    LogInfo("driver rejects NOWAIT bulk stats; reading without it (", s.message(), ")");
    nowait_.store(false);
  }
  CallCounts::Call counted(counts_.get(), procedure);
  const int n = call(0, records);
  if (n < 0) *error = LastLibvirtError(procedure);
  counted.End(n < 0 ? *error : absl::OkStatus());
  return n;
}

absl::Status DomainReads::ListInto(virConnectPtr conn, unsigned int flags,
                                   std::vector<std::pair<std::string, DomainHandle>>* out) {
  virDomainPtr* doms = nullptr;
  CallCounts::Call counted(counts_.get(), "virConnectListAllDomains");
  const int n = virConnectListAllDomains(conn, &doms, flags);
  if (n >= 0) {
    counted.End(absl::StatusCode::kOk);
    for (DomainHandle& d : AdoptDomainArray(doms, n)) {
      std::string uuid = DomainUuid(d.get());
      out->emplace_back(std::move(uuid), std::move(d));
    }
    return absl::OkStatus();
  }
  absl::Status status = LastLibvirtError("virConnectListAllDomains");
  counted.End(status);
  if (!IsTooMany(status, conn)) return status;
  for (const auto& [a, b] : kListSplits) {
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

absl::StatusOr<std::vector<DomainHandle>> DomainReads::ListAll(virConnectPtr conn,
                                                              unsigned int flags) {
  std::vector<std::pair<std::string, DomainHandle>> listed;
  if (absl::Status s = ListInto(conn, flags, &listed); !s.ok()) return s;
  absl::flat_hash_map<std::string, DomainHandle> by_uuid;
  for (auto& [uuid, dom] : listed) by_uuid[uuid] = std::move(dom);  // a later call's view wins
  std::vector<DomainHandle> out;
  out.reserve(by_uuid.size());
  for (auto& [uuid, dom] : by_uuid) out.push_back(std::move(dom));
  return out;
}

absl::StatusOr<absl::flat_hash_set<std::string>> DomainReads::ListUuids(virConnectPtr conn,
                                                                       unsigned int flags) {
  std::vector<std::pair<std::string, DomainHandle>> listed;
  if (absl::Status s = ListInto(conn, flags, &listed); !s.ok()) return s;
  absl::flat_hash_set<std::string> out;
  for (auto& [uuid, dom] : listed) out.insert(std::move(uuid));
  return out;
}

absl::StatusOr<std::vector<DomainStats>> DomainReads::Stats(
    const std::vector<virDomainPtr>& doms, unsigned int groups) {
  std::vector<DomainStats> out;
  out.reserve(doms.size());
  for (size_t first = 0; first < doms.size(); first += kMaxDomainsPerCall) {
    const size_t end = std::min(doms.size(), first + kMaxDomainsPerCall);
    // virDomainListGetStats wants a NULL-terminated array.
    std::vector<virDomainPtr> list(doms.begin() + first, doms.begin() + end);
    list.push_back(nullptr);
    virDomainStatsRecordPtr* records = nullptr;
    absl::Status error;
    const int n = WithNowait(
        "virDomainListGetStats",
        [&](unsigned int flags, virDomainStatsRecordPtr** r) {
          return virDomainListGetStats(list.data(), groups, r, flags);
        },
        &records, &error);
    if (n < 0) return error;
    AppendRecords(records, n, &out);
  }
  return out;
}

absl::Status DomainReads::AllStatsInto(virConnectPtr conn, unsigned int groups,
                                       unsigned int flags, std::vector<DomainStats>* out) {
  virDomainStatsRecordPtr* records = nullptr;
  absl::Status error;
  const int n = WithNowait(
      "virConnectGetAllDomainStats",
      [&](unsigned int nowait, virDomainStatsRecordPtr** r) {
        return virConnectGetAllDomainStats(conn, groups, r, flags | nowait);
      },
      &records, &error);
  if (n >= 0) {
    AppendRecords(records, n, out);
    return absl::OkStatus();
  }
  if (!IsTooMany(error, conn)) return error;
  for (const auto& [a, b] : kStatsSplits) {
    if (flags & (a | b)) continue;
    for (unsigned int part : {a, b, a}) {  // see ListInto
      if (absl::Status s = AllStatsInto(conn, groups, flags | part, out); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(error.message());
}

absl::StatusOr<std::vector<DomainStats>> DomainReads::AllStats(virConnectPtr conn,
                                                              unsigned int groups) {
  std::vector<DomainStats> out;
  const uint64_t calls = counts_->Get("virConnectGetAllDomainStats");
  absl::Status s = AllStatsInto(conn, groups, 0, &out);
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    // More domains of one kind than one call returns: list them (which has
    // more ways to split), then read their stats in chunks.
    absl::StatusOr<std::vector<DomainHandle>> all = ListAll(conn, 0);
    if (!all.ok()) return all.status();
    std::vector<virDomainPtr> doms;
    doms.reserve(all->size());
    for (const DomainHandle& d : *all) doms.push_back(d.get());
    return Stats(doms, groups);
  }
  if (!s.ok()) return s;
  // Split calls may have seen a domain twice.
  if (counts_->Get("virConnectGetAllDomainStats") > calls + 1) DedupeByUuid(&out);
  return out;
}

absl::StatusOr<DomainHandle> DomainReads::LookupByUuid(virConnectPtr conn,
                                                      const std::string& uuid) {
  CallCounts::Call counted(counts_.get(), "virDomainLookupByUUIDString");
  DomainHandle dom(virDomainLookupByUUIDString(conn, uuid.c_str()));
  return Counted(&counted, dom ? absl::StatusOr<DomainHandle>(std::move(dom))
                               : LastLibvirtError(absl::StrCat("domain uuid ", uuid)));
}

absl::StatusOr<DomainHandle> DomainReads::LookupByName(virConnectPtr conn,
                                                      const std::string& name) {
  CallCounts::Call counted(counts_.get(), "virDomainLookupByName");
  DomainHandle dom(virDomainLookupByName(conn, name.c_str()));
  return Counted(&counted, dom ? absl::StatusOr<DomainHandle>(std::move(dom))
                               : LastLibvirtError(absl::StrCat("domain \"", name, "\"")));
}

absl::StatusOr<DomainInfo> DomainReads::Info(virDomainPtr dom) {
  CallCounts::Call counted(counts_.get(), "virDomainGetInfo");
  virDomainInfo info;
  if (virDomainGetInfo(dom, &info) < 0) {
    return Counted(&counted, LastLibvirtError(absl::StrCat("virDomainGetInfo ", DomainName(dom))));
  }
  counted.End(absl::StatusCode::kOk);
  return DomainInfo{info.state, info.nrVirtCpu, info.memory, info.maxMem};
}

absl::StatusOr<bool> DomainReads::IsPersistent(virDomainPtr dom) {
  CallCounts::Call counted(counts_.get(), "virDomainIsPersistent");
  const int persistent = virDomainIsPersistent(dom);
  if (persistent < 0) {
    return Counted(&counted,
                   LastLibvirtError(absl::StrCat("virDomainIsPersistent ", DomainName(dom))));
  }
  counted.End(absl::StatusCode::kOk);
  return persistent == 1;
}

absl::StatusOr<bool> DomainReads::Autostart(virDomainPtr dom) {
  CallCounts::Call counted(counts_.get(), "virDomainGetAutostart");
  int autostart = 0;
  if (virDomainGetAutostart(dom, &autostart) < 0) {
    return Counted(&counted,
                   LastLibvirtError(absl::StrCat("virDomainGetAutostart ", DomainName(dom))));
  }
  counted.End(absl::StatusCode::kOk);
  return autostart != 0;
}

absl::StatusOr<absl::Duration> DomainReads::MonitorOccupiedFor(virDomainPtr dom) {
  CallCounts::Call counted(counts_.get(), "virDomainGetControlInfo");
  virDomainControlInfo info;
  if (virDomainGetControlInfo(dom, &info, 0) < 0) {
    return Counted(&counted,
                   LastLibvirtError(absl::StrCat("virDomainGetControlInfo ", DomainName(dom))));
  }
  counted.End(absl::StatusCode::kOk);
  if (info.state != VIR_DOMAIN_CONTROL_OCCUPIED) return absl::ZeroDuration();
  return absl::Milliseconds(info.stateTime);
}

}  // namespace virtgate
