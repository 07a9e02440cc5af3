#include "server/state/domain_transitions.h"

#include <libvirt/libvirt.h>

#include <algorithm>
#include <utility>

#include "server/libvirt/domain_state.h"

namespace virtgate {
namespace {

// The lifecycle part of a record, as the transition rules see it.
struct Shown {
  bool known = false;
  std::string name;
  bool active = false;
  bool paused = false;
  bool shutting_down = false;  // SHUTDOWN seen (or shown): the run is ending
  uint32_t id = 0;
  bool persistent = false;
};

Shown FromRecord(const v1::Domain* d) {
  Shown s;
  if (d == nullptr) return s;
  s.known = true;
  s.name = d->name();
  // From the state alone: a listing's id and state come from different
  // moments, and a domain may change in between.
  s.active = IsActiveState(d->state());
  s.paused = d->state() == v1::DOMAIN_STATE_PAUSED;
  s.shutting_down = d->state() == v1::DOMAIN_STATE_SHUTDOWN;
  s.persistent = d->persistent();
  s.id = s.active ? d->id() : 0;
  return s;
}

// A synthetic event. The detail is libvirt's generic one where the meaning
// is certain (a definition added or removed); otherwise "unknown" (-1): the
// server did not see why it happened.
v1::LifecycleEvent Synthetic(const std::string& uuid, const std::string& name, uint32_t id,
                             int libvirt_type) {
  v1::LifecycleEvent e;
  e.set_domain_uuid(uuid);
  e.set_domain_name(name);
  e.set_domain_id(id);
  e.set_type(ToProtoEventType(libvirt_type));
  e.set_type_code(libvirt_type);
  if (libvirt_type == VIR_DOMAIN_EVENT_DEFINED || libvirt_type == VIR_DOMAIN_EVENT_UNDEFINED) {
    e.set_detail_code(0);  // VIR_DOMAIN_EVENT_DEFINED_ADDED / _UNDEFINED_REMOVED
    e.set_detail(EventDetailName(libvirt_type, 0));
  } else {
    e.set_detail_code(-1);
    e.set_detail("unknown");
  }
  e.set_synthetic(true);
  return e;
}

// States that differ without an event between them count as one.
v1::DomainState RunClass(v1::DomainState s) {
  return s == v1::DOMAIN_STATE_BLOCKED ? v1::DOMAIN_STATE_RUNNING : s;
}

// The event that takes an active domain into `state` within its run.
int EventInto(v1::DomainState state) {
  switch (state) {
    case v1::DOMAIN_STATE_PAUSED: return VIR_DOMAIN_EVENT_SUSPENDED;
    case v1::DOMAIN_STATE_SHUTDOWN: return VIR_DOMAIN_EVENT_SHUTDOWN;
    case v1::DOMAIN_STATE_PMSUSPENDED: return VIR_DOMAIN_EVENT_PMSUSPENDED;
    case v1::DOMAIN_STATE_CRASHED: return VIR_DOMAIN_EVENT_CRASHED;
    default: return VIR_DOMAIN_EVENT_RESUMED;  // running (or blocked) again
  }
}

void SetState(v1::Domain* d, int state, int reason) {
  d->set_state(ToProtoState(state));
  d->set_state_reason(StateReasonName(state, reason));
  d->set_state_reason_code(reason);
}

}  // namespace

std::optional<v1::Domain> ApplyEvent(const v1::Domain* record, const v1::LifecycleEvent& e) {
  v1::Domain d;
  if (record != nullptr) {
    d = *record;
  } else {
    // First heard of: defined (shut off), or a transient domain started.
    d.set_uuid(e.domain_uuid());
    SetState(&d, VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_UNKNOWN);
  }
  d.set_name(e.domain_name());
  switch (e.type()) {
    case v1::LIFECYCLE_EVENT_TYPE_DEFINED:
      d.set_persistent(true);
      return d;
    case v1::LIFECYCLE_EVENT_TYPE_UNDEFINED:
      d.set_persistent(false);
      if (!IsActiveState(d.state())) return std::nullopt;
      return d;
    default:
      break;
  }
  // Only a start brings an inactive domain to life. QEMU resumes a domain it
  // is starting just before STARTED: that RESUMED changes nothing here, so
  // the STARTED after it is a change of its own.
  if (e.type() != v1::LIFECYCLE_EVENT_TYPE_STARTED && !IsActiveState(d.state())) {
    if (record == nullptr) return std::nullopt;
    return d;
  }
  if (std::optional<StateAndReason> next = StateAfterEvent(e.type_code(), e.detail_code())) {
    SetState(&d, next->state, next->reason);
  }
  const bool active = IsActiveState(d.state());
  if (!active) {
    d.set_id(0);
    if (!d.persistent()) return std::nullopt;  // a transient domain ends with its run
  } else if (e.domain_id() != 0) {
    d.set_id(e.domain_id());
  }
  return d;
}

bool IsNewEvent(const v1::Domain* record, const v1::LifecycleEvent& e) {
  const Shown s = FromRecord(record);
  // While a run with id N is shown, an event carrying another id belongs to
  // an earlier run (a later one would have needed N's STOPPED first).
  const bool other_run =
      s.known && s.active && s.id != 0 && e.domain_id() != 0 && e.domain_id() != s.id;
  switch (e.type()) {
    case v1::LIFECYCLE_EVENT_TYPE_DEFINED:
      // "added" creates a persistent definition; one already shown was seen.
      return !(e.detail() == "added" && s.known && s.persistent);
    case v1::LIFECYCLE_EVENT_TYPE_UNDEFINED:
      return s.known && s.persistent;
    case v1::LIFECYCLE_EVENT_TYPE_STARTED:
      // A start needs an inactive domain: the stream would have shown the
      // stop before it, so a start of a domain shown active was shown.
      return !(s.known && s.active);
    case v1::LIFECYCLE_EVENT_TYPE_SUSPENDED:
      // Only a running domain of the shown run can be paused; one shown
      // inactive or shutting down was paused in a run that already ended.
      return !(s.known && (!s.active || s.paused || s.shutting_down || other_run));
    case v1::LIFECYCLE_EVENT_TYPE_RESUMED:
      // QEMU resumes a domain it is starting before STARTED: a RESUMED of a
      // domain shown inactive may be a new run, so it passes.
      return !(s.known && s.active && (!s.paused || s.shutting_down || other_run));
    case v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN:
      return !(s.known && (!s.active || s.shutting_down || other_run));
    case v1::LIFECYCLE_EVENT_TYPE_STOPPED:
      // The stop of a run not shown active, or of an earlier run.
      return s.known && s.active && !other_run;
    default:
      return true;  // PMSUSPENDED, CRASHED: informational, never dropped
  }
}

std::vector<v1::LifecycleEvent> CatchUpEvents(
    const absl::flat_hash_map<std::string, const v1::Domain*>& known,
    const std::vector<v1::Domain>& listed) {
  std::vector<v1::LifecycleEvent> out;
  // Domains in name order, vanished ones with the name they were shown with.
  std::vector<std::pair<std::string, std::string>> order;  // (name, uuid)
  absl::flat_hash_map<std::string, const v1::Domain*> now;
  for (const v1::Domain& d : listed) {
    now[d.uuid()] = &d;
    order.emplace_back(d.name(), d.uuid());
  }
  for (const auto& [uuid, d] : known) {
    if (!now.contains(uuid)) order.emplace_back(d->name(), uuid);
  }
  std::sort(order.begin(), order.end());

  for (const auto& [name, uuid] : order) {
    auto known_it = known.find(uuid);
    const Shown was = FromRecord(known_it == known.end() ? nullptr : known_it->second);
    auto now_it = now.find(uuid);
    if (now_it == now.end()) {  // vanished
      if (was.active) out.push_back(Synthetic(uuid, was.name, 0, VIR_DOMAIN_EVENT_STOPPED));
      if (was.persistent || !was.active) {
        out.push_back(Synthetic(uuid, was.name, 0, VIR_DOMAIN_EVENT_UNDEFINED));
      }
      continue;
    }
    const v1::Domain& listed_now = *now_it->second;
    if (was.known && listed_now.stale() && listed_now.state() == v1::DOMAIN_STATE_NOSTATE) {
      continue;  // unreadable now (busy): keep what was shown
    }
    const Shown is = FromRecord(&listed_now);
    if (!was.persistent && is.persistent) {
      out.push_back(Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_DEFINED));
    } else if (was.known && was.persistent && is.persistent && was.name != is.name) {
      v1::LifecycleEvent renamed = Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_DEFINED);
      renamed.set_detail_code(VIR_DOMAIN_EVENT_DEFINED_RENAMED);
      renamed.set_detail(EventDetailName(VIR_DOMAIN_EVENT_DEFINED, VIR_DOMAIN_EVENT_DEFINED_RENAMED));
      out.push_back(std::move(renamed));
    }
    const bool new_run = was.active && is.active && was.id != 0 && is.id != 0 && was.id != is.id;
    if (was.active && (!is.active || new_run)) {
      out.push_back(Synthetic(uuid, is.name, was.id, VIR_DOMAIN_EVENT_STOPPED));
    }
    if (is.active && (!was.active || new_run)) {
      out.push_back(Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_STARTED));
      if (is.paused) out.push_back(Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_SUSPENDED));
    } else if (is.active && RunClass(known_it->second->state()) != RunClass(listed_now.state())) {
      // Within one run: the event that leads to the listed state (so the
      // record's change comes with a sequence, as every change must).
      out.push_back(Synthetic(uuid, is.name, is.id, EventInto(listed_now.state())));
    }
    if (was.persistent && !is.persistent) {
      out.push_back(Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_UNDEFINED));
    }
  }
  return out;
}

}  // namespace virtgate
