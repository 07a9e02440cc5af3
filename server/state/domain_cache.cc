#include "server/state/domain_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"

#include "server/base/log.h"
#include "server/libvirt/domain_state.h"
#include "server/state/domain_transitions.h"

namespace virtgate {
namespace {

// Live events held while a re-listing runs. libvirt raises far fewer in the
// time a listing takes; more would mean libvirtd is flooding us.
constexpr size_t kMaxHeld = 100000;

// Whether a record and an observation agree on what events tell: active or
// not, paused or not, and which run.
bool Agrees(const v1::Domain& record, const DomainCache::Observed& seen) {
  if (!seen.exists) return false;
  const bool active = IsActiveState(record.state());
  if (active != IsActiveState(seen.state)) return false;
  if (!active) return true;
  return (record.state() == v1::DOMAIN_STATE_PAUSED) ==
             (seen.state == v1::DOMAIN_STATE_PAUSED) &&
         record.id() == seen.id;
}

}  // namespace

void DomainCache::ApplyFacts(const Facts& f, absl::Time read_at, v1::Domain* d) {
  d->set_vcpus(f.vcpus);
  d->set_memory_kib(f.memory_kib);
  d->set_max_memory_kib(f.max_memory_kib);
  d->set_cpu_time_ns(f.cpu_time_ns);
  const int64_t nanos = absl::ToUnixNanos(read_at);
  d->mutable_facts_time()->set_seconds(nanos / 1000000000);
  d->mutable_facts_time()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  if (f.seen.has_value() && ToProtoState(f.seen->state) == d->state()) {
    d->set_state_reason(StateReasonName(f.seen->state, f.seen->reason));
    d->set_state_reason_code(f.seen->reason);
  }
}

DomainCache::DomainCache(Options options, std::shared_ptr<EventHub> hub,
                         std::shared_ptr<Availability> availability)
    : options_(options), hub_(std::move(hub)), availability_(std::move(availability)) {}

void DomainCache::CopyFacts(const v1::Domain& from, v1::Domain* to) {
  to->set_vcpus(from.vcpus());
  to->set_memory_kib(from.memory_kib());
  to->set_max_memory_kib(from.max_memory_kib());
  to->set_cpu_time_ns(from.cpu_time_ns());
  to->set_autostart(from.autostart());
  *to->mutable_facts_time() = from.facts_time();
  if (from.state() == to->state()) {
    to->set_state_reason(from.state_reason());
    to->set_state_reason_code(from.state_reason_code());
  }
}

// --- The feed's side

void DomainCache::OnEvent(v1::LifecycleEvent event) {
  absl::MutexLock lock(&mu_);
  if (v1::LifecycleEventType_IsValid(event.type())) ++stats_.received[event.type()];
  if (resyncing_) {
    if (held_.size() < kMaxHeld) {
      held_.push_back(std::move(event));
    } else {
      held_overflowed_ = true;
    }
    return;
  }
  // While a LOST is outstanding, an event can only come from a registration
  // being torn down: the next re-listing accounts for what it says.
  if (lost_) return;
  // Only just after a re-listing may an event be one it already reflected.
  if (absl::Now() < dedupe_until_ && !IsNewEvent(FindLocked(event.domain_uuid()), event)) {
    ++stats_.duplicates;
    return;
  }
  PublishEventLocked(std::move(event));
}

void DomainCache::OnLost(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  resyncing_ = false;
  held_.clear();
  SetCurrentLocked(false);
  if (lost_) return;
  lost_ = true;
  ++stats_.losses;
  PublishConnectionLocked(v1::ConnectionChange::STATE_LOST, reason);
}

void DomainCache::BeginResync() {
  absl::MutexLock lock(&mu_);
  resyncing_ = true;
  held_.clear();
  held_overflowed_ = false;
}

absl::Status DomainCache::FinishResync(absl::StatusOr<std::vector<v1::Domain>> listed) {
  absl::MutexLock lock(&mu_);
  resyncing_ = false;
  std::vector<v1::LifecycleEvent> held;
  held.swap(held_);
  if (listed.ok() && held_overflowed_) {
    listed = absl::ResourceExhaustedError(absl::StrCat(
        "more than ", kMaxHeld, " lifecycle events arrived while listing; listing again"));
  }
  suspects_.clear();  // the listing settles them, or it failed and we go again
  if (!listed.ok()) {
    LogWarning("cannot list domain states after connecting: ", listed.status().message());
    SetCurrentLocked(false);
    if (!lost_) {
      lost_ = true;
      ++stats_.losses;
      PublishConnectionLocked(v1::ConnectionChange::STATE_LOST,
                              std::string(listed.status().message()));
    }
    return listed.status();
  }
  ++stats_.resyncs;
  if (lost_) {
    lost_ = false;
    PublishConnectionLocked(v1::ConnectionChange::STATE_RESTORED, "");
  }
  if (stats_.seeded || stats_.losses > 0) {
    absl::flat_hash_map<std::string, const v1::Domain*> known;
    for (const auto& [uuid, record] : records_) known[uuid] = record.get();
    std::vector<v1::LifecycleEvent> missed = CatchUpEvents(known, *listed);
    known.clear();  // the records change from here on
    if (!missed.empty()) {
      LogInfo("re-listed: ", missed.size(),
              " lifecycle changes no event told of; sent as synthetic events");
    }
    for (v1::LifecycleEvent& e : missed) {
      ++stats_.synthetic;
      PublishEventLocked(std::move(e));
    }
  }
  // The listing's states and reasons are libvirt's own (a synthetic
  // event's reason is "unknown"); sequences stay those of the events.
  ApplyListingLocked(*listed);
  stats_.seeded = true;
  SetCurrentLocked(true);
  for (v1::LifecycleEvent& e : held) {
    if (!IsNewEvent(FindLocked(e.domain_uuid()), e)) {
      ++stats_.duplicates;
      continue;
    }
    PublishEventLocked(std::move(e));
  }
  dedupe_until_ = absl::Now() + options_.dedupe_window;
  return absl::OkStatus();
}

bool DomainCache::TakeConfirmedDrift(absl::Time now) {
  absl::MutexLock lock(&mu_);
  bool confirmed = false;
  for (auto it = suspects_.begin(); it != suspects_.end();) {
    const v1::Domain* record = FindLocked(it->first);
    if (record == nullptr || record->sequence() != it->second.sequence) {
      suspects_.erase(it++);  // an event came and explained it
      continue;
    }
    if (now - it->second.since >= options_.drift_grace) {
      LogWarning("domain ", record->name(), " (", it->first, "): libvirt reported a state no "
                 "event explained for ", absl::FormatDuration(now - it->second.since),
                 "; re-listing");
      confirmed = true;
    }
    ++it;
  }
  if (confirmed) {
    suspects_.clear();
    ++stats_.drift_resyncs;
  }
  return confirmed;
}

void DomainCache::PublishEventLocked(v1::LifecycleEvent event) {
  const std::string uuid = event.domain_uuid();
  std::optional<v1::Domain> next = ApplyEvent(FindLocked(uuid), event);
  v1::WatchLifecycleResponse m;
  *m.mutable_event() = std::move(event);
  sequence_ = hub_->Publish(std::move(m));
  if (next.has_value()) next->set_sequence(sequence_);
  SetRecordLocked(uuid, std::move(next));
}

void DomainCache::PublishConnectionLocked(v1::ConnectionChange::State state,
                                          const std::string& reason) {
  v1::WatchLifecycleResponse m;
  m.mutable_connection()->set_state(state);
  m.mutable_connection()->set_reason(reason);
  sequence_ = hub_->Publish(std::move(m));
}

void DomainCache::SetRecordLocked(const std::string& uuid, std::optional<v1::Domain> next) {
  auto it = records_.find(uuid);
  if (it != records_.end()) order_.erase({it->second->name(), uuid});
  if (!next.has_value()) {
    if (it != records_.end()) records_.erase(it);
    return;
  }
  order_.insert({next->name(), uuid});
  records_[uuid] = std::make_shared<const v1::Domain>(*std::move(next));
}

void DomainCache::ApplyListingLocked(const std::vector<v1::Domain>& listed) {
  absl::flat_hash_set<std::string> present;
  for (const v1::Domain& d : listed) {
    present.insert(d.uuid());
    const v1::Domain* known = FindLocked(d.uuid());
    if (known != nullptr && d.stale() && d.state() == v1::DOMAIN_STATE_NOSTATE) continue;
    v1::Domain next = known != nullptr ? *known : v1::Domain();
    next.set_uuid(d.uuid());
    next.set_name(d.name());
    next.set_id(d.id());
    next.set_state(d.state());
    next.set_state_reason(d.state_reason());
    next.set_state_reason_code(d.state_reason_code());
    next.set_persistent(d.persistent());
    SetRecordLocked(d.uuid(), std::move(next));
  }
  std::vector<std::string> gone;
  for (const auto& [uuid, record] : records_) {
    if (!present.contains(uuid)) gone.push_back(uuid);
  }
  for (const std::string& uuid : gone) SetRecordLocked(uuid, std::nullopt);
}

void DomainCache::SetCurrentLocked(bool current) {
  current_ = current;
  availability_->SetEventsUp(current);
}

// --- Readers

void DomainCache::ViewLocked(View* view) const {
  view->sequence = sequence_;
  view->current = current_;
  view->seeded = stats_.seeded;
  view->total = records_.size();
}

const v1::Domain* DomainCache::FindLocked(const std::string& uuid) const {
  auto it = records_.find(uuid);
  return it == records_.end() ? nullptr : it->second.get();
}

DomainCache::View DomainCache::Read(const Query& query) const {
  View view;
  absl::MutexLock lock(&mu_);
  ViewLocked(&view);
  view.domains.reserve(std::min(query.limit, records_.size()));
  auto it = query.after.has_value() ? order_.upper_bound(*query.after) : order_.begin();
  for (; it != order_.end(); ++it) {
    const Record& record = records_.at(it->second);
    if (query.matches && !query.matches(*record)) continue;
    if (view.domains.size() == query.limit) {
      view.more = true;
      break;
    }
    view.domains.push_back(record);
  }
  return view;
}

std::vector<DomainCache::Record> DomainCache::Current(const Record* begin,
                                                      const Record* end) const {
  std::vector<Record> out;
  out.reserve(end - begin);
  absl::MutexLock lock(&mu_);
  for (const Record* r = begin; r != end; ++r) {
    auto it = records_.find((*r)->uuid());
    out.push_back(it == records_.end() ? nullptr : it->second);
  }
  return out;
}

std::optional<DomainCache::Record> DomainCache::FindByUuid(const std::string& uuid,
                                                           View* at) const {
  absl::MutexLock lock(&mu_);
  if (at != nullptr) ViewLocked(at);
  auto it = records_.find(uuid);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

std::optional<DomainCache::Record> DomainCache::FindByName(const std::string& name,
                                                           View* at) const {
  absl::MutexLock lock(&mu_);
  if (at != nullptr) ViewLocked(at);
  auto it = order_.lower_bound({name, ""});
  if (it == order_.end() || it->first != name) return std::nullopt;
  return records_.at(it->second);
}

absl::StatusOr<DomainCache::Subscription> DomainCache::SubscribeWithSnapshot(
    WatchFilter filter, std::function<void()> wake) {
  Subscription out;
  absl::MutexLock lock(&mu_);  // no event is published until both are taken
  ViewLocked(&out.snapshot);
  const bool all = filter.uuids.empty() && filter.names.empty();
  for (const Key& key : order_) {
    if (all || filter.uuids.contains(key.second) || filter.names.contains(key.first)) {
      out.snapshot.domains.push_back(records_.at(key.second));
    }
  }
  absl::StatusOr<std::shared_ptr<EventHub::Subscriber>> sub =
      hub_->Subscribe(std::move(filter), std::nullopt, "", std::move(wake));
  if (!sub.ok()) return sub.status();
  out.subscriber = *std::move(sub);
  return out;
}

// --- Fresh reads' side

void DomainCache::UpdateFacts(const std::vector<Facts>& facts, absl::Time read_at) {
  absl::MutexLock lock(&mu_);
  for (const Facts& f : facts) {
    auto it = records_.find(f.uuid);
    if (it == records_.end()) continue;  // undefined meanwhile
    const v1::Domain& now = *it->second;
    if (now.sequence() != f.sequence) continue;  // changed since the read
    if (now.has_facts_time() && absl::FromUnixSeconds(now.facts_time().seconds()) +
                                        absl::Nanoseconds(now.facts_time().nanos()) >
                                    read_at) {
      continue;  // a later read got there first
    }
    v1::Domain next = now;
    ApplyFacts(f, read_at, &next);
    it->second = std::make_shared<const v1::Domain>(std::move(next));
  }
}

void DomainCache::UpdateAutostart(const absl::flat_hash_set<std::string>& autostart,
                                  absl::Time read_at) {
  absl::MutexLock lock(&mu_);
  for (auto& [uuid, record] : records_) {
    const bool on = autostart.contains(uuid);
    if (record->autostart() == on) continue;
    v1::Domain next = *record;
    next.set_autostart(on);
    record = std::make_shared<const v1::Domain>(std::move(next));
  }
  autostart_read_at_ = std::max(autostart_read_at_, read_at);
}

absl::Time DomainCache::autostart_read_at() const {
  absl::MutexLock lock(&mu_);
  return autostart_read_at_;
}

void DomainCache::NoteObserved(const std::vector<Observed>& observed) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  if (!current_) return;  // nothing to compare against while events are down
  for (const Observed& seen : observed) {
    const v1::Domain* record = FindLocked(seen.uuid);
    // An event since the read makes the comparison meaningless.
    if (record == nullptr || record->sequence() != seen.sequence) continue;
    if (Agrees(*record, seen)) {
      suspects_.erase(seen.uuid);
      continue;
    }
    auto [it, inserted] = suspects_.try_emplace(seen.uuid, Suspect{record->sequence(), now});
    if (!inserted && it->second.sequence != record->sequence()) {
      it->second = Suspect{record->sequence(), now};
    }
  }
}

bool DomainCache::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

DomainCache::Stats DomainCache::GetStats() const {
  absl::MutexLock lock(&mu_);
  Stats stats = stats_;
  stats.current = current_;
  stats.sequence = sequence_;
  stats.domains = records_.size();
  return stats;
}

}  // namespace virtgate
