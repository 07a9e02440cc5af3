#include "tests/support/client_view.h"

#include <libvirt/libvirt.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace virtgate::testing {
namespace {

bool Active(int state) { return state != VIR_DOMAIN_NOSTATE && state != VIR_DOMAIN_SHUTOFF; }

}  // namespace

std::string Describe(const v1::WatchLifecycleResponse& m, EventNames names) {
  if (m.has_event()) {
    const std::string& type = v1::LifecycleEventType_Name(m.event().type());
    return absl::StrCat(
        m.event().domain_name(), " ",
        names == EventNames::kShort ? absl::StripPrefix(type, "LIFECYCLE_EVENT_TYPE_") : type,
        "/", m.event().detail(), m.event().synthetic() ? " (synthetic)" : "");
  }
  if (m.has_connection()) {
    return absl::StrCat("connection ", v1::ConnectionChange::State_Name(m.connection().state()),
                        " (", m.connection().reason(), ")");
  }
  if (m.has_initial()) {
    const v1::Domain& d = m.initial().domain();
    return absl::StrCat(d.name(), " INITIAL ", v1::DomainState_Name(d.state()), "/",
                        d.state_reason(), d.persistent() ? "" : " (transient)",
                        d.stale() ? " (stale)" : "");
  }
  if (m.has_synced()) return "SYNCED";
  return "?";
}

std::string ClientView::Apply(const v1::WatchLifecycleResponse& m) {
  std::string problem;
  if (m.has_connection()) {
    const bool lost = m.connection().state() == v1::ConnectionChange::STATE_LOST;
    if (lost == !connected_) problem = "repeats the connection state";
    connected_ = !lost;
    (lost ? lost_ : restored_)++;
  } else if (m.has_synced()) {
    synced_ = true;
  } else if (m.has_initial()) {
    const v1::Domain& d = m.initial().domain();
    // The proto's DomainState is libvirt's state plus one.
    domains_[d.uuid()] = {d.name(), static_cast<int>(d.state()) - 1, d.persistent(), false};
    if (synced_) problem = "initial state after the synced marker";
  } else if (m.has_event()) {
    problem = ApplyEvent(m.event());
  }
  if (problem.empty()) return "";
  return absl::StrCat(Describe(m, EventNames::kShort), " at seq ", m.sequence(), ": ", problem);
}

std::string ClientView::ApplyEvent(const v1::LifecycleEvent& e) {
  if (e.synthetic()) ++synthetic_;
  // A domain the view has not heard of is shut off (or does not exist).
  Domain unknown;
  unknown.state = VIR_DOMAIN_SHUTOFF;
  Domain& d = domains_.try_emplace(e.domain_uuid(), unknown).first->second;
  d.name = e.domain_name();
  if (d.starting && e.type() != v1::LIFECYCLE_EVENT_TYPE_STARTED) {
    d.starting = false;
    const std::string also = ApplyTransition(e, d);
    return absl::StrCat("RESUMED while inactive, and not followed by STARTED",
                        also.empty() ? "" : "; ", also);
  }
  return ApplyTransition(e, d);
}

std::string ClientView::ApplyTransition(const v1::LifecycleEvent& e, Domain& d) {
  const bool active = Active(d.state);
  switch (e.type()) {
    case v1::LIFECYCLE_EVENT_TYPE_DEFINED:
      d.persistent = true;
      return "";
    case v1::LIFECYCLE_EVENT_TYPE_UNDEFINED:
      d.persistent = false;
      if (!active) domains_.erase(e.domain_uuid());
      return "";
    case v1::LIFECYCLE_EVENT_TYPE_STARTED:
      d.starting = false;
      d.state = VIR_DOMAIN_RUNNING;
      return active ? "STARTED while active" : "";
    case v1::LIFECYCLE_EVENT_TYPE_SUSPENDED: {
      const bool running = d.state == VIR_DOMAIN_RUNNING;
      d.state = VIR_DOMAIN_PAUSED;
      return running ? "" : "SUSPENDED while not running";
    }
    case v1::LIFECYCLE_EVENT_TYPE_RESUMED:
      if (!active && e.detail() == "unpaused") {
        d.starting = true;  // QEMU's start: STARTED must come next
        return "";
      }
      if (d.state != VIR_DOMAIN_PAUSED) return "RESUMED while not paused";
      d.state = VIR_DOMAIN_RUNNING;
      return "";
    case v1::LIFECYCLE_EVENT_TYPE_STOPPED:
      d.state = VIR_DOMAIN_SHUTOFF;
      if (!d.persistent) domains_.erase(e.domain_uuid());  // a transient domain is gone
      return active ? "" : "STOPPED while inactive";
    default:
      // SHUTDOWN (QEMU reports it before STOPPED/destroyed), CRASHED,
      // PMSUSPENDED: no change a client needs to track here.
      return "";
  }
}

std::vector<std::string> ClientView::DiffFrom(
    const std::map<std::string, TruthEntry>& truth) const {
  std::vector<std::string> diffs;
  for (const auto& [uuid, t] : truth) {
    auto it = domains_.find(uuid);
    if (it == domains_.end()) {
      diffs.push_back(absl::StrCat(t.name, ": in libvirt, not in the view"));
    } else if (it->second.state != t.state) {
      diffs.push_back(absl::StrCat(t.name, ": view state ", it->second.state,
                                   ", libvirt state ", t.state));
    }
  }
  for (const auto& [uuid, d] : domains_) {
    if (truth.count(uuid)) continue;
    // A transient domain that stopped is gone; a view entry that is
    // inactive and not in libvirt must have been undefined.
    diffs.push_back(absl::StrCat(d.name, Active(d.state) ? ": active" : ":",
                                 " in the view, not in libvirt"));
  }
  for (const auto& [uuid, d] : domains_) {
    if (d.starting) {
      diffs.push_back(absl::StrCat(d.name, ": RESUMED while inactive, never STARTED"));
    }
  }
  return diffs;
}

}  // namespace virtgate::testing
