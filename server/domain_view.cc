#include "server/domain_view.h"

#include <algorithm>
#include <utility>

#include <libvirt/libvirt.h>

#include "absl/container/flat_hash_set.h"
#include "server/domain_state.h"

namespace virtgate {
namespace {

bool IsActiveState(v1::DomainState s) {
  return s == v1::DOMAIN_STATE_RUNNING || s == v1::DOMAIN_STATE_PAUSED ||
         s == v1::DOMAIN_STATE_BLOCKED || s == v1::DOMAIN_STATE_SHUTDOWN ||
         s == v1::DOMAIN_STATE_PMSUSPENDED;
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

}  // namespace

DomainView::Shown DomainView::FromDomain(const v1::Domain& d) {
  Shown s;
  s.name = d.name();
  // From the state alone: the id comes from the listing, the state from the
  // bulk stats read just after it, and a domain may change in between.
  s.active = IsActiveState(d.state());
  s.paused = d.state() == v1::DOMAIN_STATE_PAUSED;
  s.shutting_down = d.state() == v1::DOMAIN_STATE_SHUTDOWN;
  s.persistent = d.persistent();
  s.id = s.active ? d.id() : 0;
  return s;
}

void DomainView::Add(const v1::Domain& d) { domains_[d.uuid()] = FromDomain(d); }

bool DomainView::IsNew(const v1::LifecycleEvent& e) {
  auto it = domains_.find(e.domain_uuid());
  const bool shown = it != domains_.end();
  Shown s = shown ? it->second : Shown{};
  // While a run with id N is shown, an event carrying another id belongs to
  // an earlier run (a later one would have needed N's STOPPED first).
  const bool other_run =
      shown && s.active && s.id != 0 && e.domain_id() != 0 && e.domain_id() != s.id;
  bool is_new = true;
  switch (e.type()) {
    case v1::LIFECYCLE_EVENT_TYPE_DEFINED:
      // "added" creates a persistent definition; one already shown was seen.
      is_new = !(e.detail() == "added" && shown && s.persistent);
      s.persistent = true;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_UNDEFINED:
      is_new = shown && s.persistent;
      s.persistent = false;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_STARTED:
      // A start needs an inactive domain: the stream would have shown the
      // stop before it, so a start of a domain shown active was shown.
      is_new = !(shown && s.active);
      s.active = true;
      s.paused = false;
      s.shutting_down = false;
      s.id = e.domain_id();
      break;
    case v1::LIFECYCLE_EVENT_TYPE_SUSPENDED:
      // Only a running domain of the shown run can be paused; one shown
      // inactive or shutting down was paused in a run that already ended.
      is_new = !(shown && (!s.active || s.paused || s.shutting_down || other_run));
      s.paused = true;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_RESUMED:
      // QEMU resumes a domain it is starting before STARTED: a RESUMED of a
      // domain shown inactive may be a new run, so it passes.
      is_new = !(shown && s.active && (!s.paused || s.shutting_down || other_run));
      s.paused = false;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_SHUTDOWN:
      is_new = !(shown && (!s.active || s.shutting_down || other_run));
      s.shutting_down = true;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_STOPPED:
      // The stop of a run not shown active, or of an earlier run.
      is_new = shown && s.active && !other_run;
      s.active = false;
      s.paused = false;
      s.shutting_down = false;
      s.id = 0;
      break;
    default:
      break;  // PMSUSPENDED, CRASHED: informational, never dropped
  }
  // An event the view already reflects changes nothing in it.
  if (!is_new) return false;
  // A transient domain vanishes when it stops or is undefined while off.
  if (!s.persistent && !s.active && e.type() != v1::LIFECYCLE_EVENT_TYPE_DEFINED) {
    domains_.erase(e.domain_uuid());
  } else {
    s.name = e.domain_name();
    domains_[e.domain_uuid()] = std::move(s);
  }
  return true;
}

std::vector<v1::LifecycleEvent> DomainView::CatchUp(const std::vector<v1::Domain>& listed) {
  std::vector<v1::LifecycleEvent> out;
  // Domains in name order, vanished ones with the name they were shown with.
  std::vector<std::pair<std::string, std::string>> order;  // (name, uuid)
  absl::flat_hash_map<std::string, const v1::Domain*> now;
  for (const v1::Domain& d : listed) {
    now[d.uuid()] = &d;
    order.emplace_back(d.name(), d.uuid());
  }
  for (const auto& [uuid, s] : domains_) {
    if (!now.contains(uuid)) order.emplace_back(s.name, uuid);
  }
  std::sort(order.begin(), order.end());

  for (const auto& [name, uuid] : order) {
    auto shown_it = domains_.find(uuid);
    auto now_it = now.find(uuid);
    if (now_it == now.end()) {  // vanished
      const Shown& was = shown_it->second;
      if (was.active) out.push_back(Synthetic(uuid, was.name, 0, VIR_DOMAIN_EVENT_STOPPED));
      if (was.persistent || !was.active) {
        out.push_back(Synthetic(uuid, was.name, 0, VIR_DOMAIN_EVENT_UNDEFINED));
      }
      domains_.erase(shown_it);
      continue;
    }
    const bool known = shown_it != domains_.end();
    if (known && now_it->second->stale() &&
        now_it->second->state() == v1::DOMAIN_STATE_NOSTATE) {
      continue;  // unreadable now (busy): keep what was shown
    }
    const Shown is = FromDomain(*now_it->second);
    const Shown was = known ? shown_it->second : Shown{};
    if (!was.persistent && is.persistent) {
      out.push_back(Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_DEFINED));
    } else if (known && was.persistent && is.persistent && was.name != is.name) {
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
    } else if (is.active && was.paused != is.paused) {
      out.push_back(Synthetic(uuid, is.name, is.id,
                              is.paused ? VIR_DOMAIN_EVENT_SUSPENDED : VIR_DOMAIN_EVENT_RESUMED));
    }
    if (was.persistent && !is.persistent) {
      out.push_back(Synthetic(uuid, is.name, is.id, VIR_DOMAIN_EVENT_UNDEFINED));
    }
    domains_[uuid] = is;
  }
  return out;
}

}  // namespace virtgate
