#include "tests/e2e/watch_stream.h"

#include <libvirt/libvirt.h>

#include "absl/strings/str_cat.h"

namespace virtgate::e2e {

std::string Describe(const v1::WatchLifecycleResponse& m) {
  if (m.has_event()) {
    std::string type = v1::LifecycleEventType_Name(m.event().type());
    const std::string prefix = "LIFECYCLE_EVENT_TYPE_";
    if (type.rfind(prefix, 0) == 0) type = type.substr(prefix.size());
    return absl::StrCat(m.event().domain_name(), " ", type, "/", m.event().detail(),
                        m.event().synthetic() ? " (synthetic)" : "");
  }
  if (m.has_initial()) {
    return absl::StrCat(m.initial().domain().name(), " INITIAL ",
                        v1::DomainState_Name(m.initial().domain().state()), "/",
                        m.initial().domain().state_reason(),
                        m.initial().domain().persistent() ? "" : " (transient)",
                        m.initial().domain().stale() ? " (stale)" : "");
  }
  if (m.has_synced()) return "SYNCED";
  if (m.has_connection()) {
    return absl::StrCat("CONNECTION ",
                        v1::ConnectionChange::State_Name(m.connection().state()), " ",
                        m.connection().reason());
  }
  return "?";
}

std::string DomainView::Apply(const v1::WatchLifecycleResponse& m) {
  if (m.has_synced()) {
    synced_ = true;
    return "";
  }
  if (m.has_initial()) {
    const v1::Domain& d = m.initial().domain();
    // The proto's DomainState is libvirt's state plus one.
    domains_[d.uuid()] = {d.name(), static_cast<int>(d.state()) - 1};
    return synced_ ? "initial state after the synced marker" : "";
  }
  if (!m.has_event()) return "";
  const v1::LifecycleEvent& e = m.event();
  auto it = domains_.find(e.domain_uuid());
  const bool known = it != domains_.end();
  const int state = known ? it->second.state : VIR_DOMAIN_SHUTOFF;
  const bool active = state != VIR_DOMAIN_SHUTOFF;
  const std::string what = Describe(m);
  std::string problem;
  int next = state;
  switch (e.type()) {
    case v1::LIFECYCLE_EVENT_TYPE_DEFINED:
      break;
    case v1::LIFECYCLE_EVENT_TYPE_UNDEFINED:
      if (!active) {
        domains_.erase(e.domain_uuid());
        return "";
      }
      break;
    case v1::LIFECYCLE_EVENT_TYPE_STARTED:
      if (active) problem = "start of a domain already active";
      next = VIR_DOMAIN_RUNNING;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_SUSPENDED:
      if (state != VIR_DOMAIN_RUNNING) problem = "suspend of a domain not running";
      next = VIR_DOMAIN_PAUSED;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_RESUMED:
      // QEMU starts its process paused and resumes it before libvirt reports
      // STARTED: RESUMED/unpaused of an inactive domain is a start under way.
      if (state == VIR_DOMAIN_RUNNING) problem = "resume of a domain already running";
      if (active) next = VIR_DOMAIN_RUNNING;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_STOPPED:
      if (!active) problem = "stop of an inactive domain";
      next = VIR_DOMAIN_SHUTOFF;
      break;
    default:
      break;  // SHUTDOWN (QEMU reports it before STOPPED/destroyed), CRASHED, ...
  }
  domains_[e.domain_uuid()] = {e.domain_name(), next};
  return problem.empty() ? "" : absl::StrCat(what, ": ", problem);
}

}  // namespace virtgate::e2e
