#include "server/lifecycle_events.h"

#include <libvirt/virterror.h>

#include "server/domain_state.h"
#include "server/libvirt_errors.h"
#include "server/libvirt_handles.h"

namespace virtgate {

absl::Status LifecycleEventSource::Register(virConnectPtr conn) const {
  // libvirt owns a reference to the sink until it calls FreeOpaque (when the
  // callback is deregistered or the connection closes).
  auto* opaque = new std::shared_ptr<Sink>(sink_);
  const int id = virConnectDomainEventRegisterAny(
      conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      VIR_DOMAIN_EVENT_CALLBACK(&LifecycleEventSource::OnLifecycle), opaque,
      &LifecycleEventSource::FreeOpaque);
  if (id < 0) {
    delete opaque;
    return LastLibvirtError("virConnectDomainEventRegisterAny(lifecycle)");
  }
  absl::MutexLock lock(&sink_->mu);
  sink_->callback_ids[conn] = id;
  return absl::OkStatus();
}

void LifecycleEventSource::Deregister(virConnectPtr conn) const {
  int id;
  {
    absl::MutexLock lock(&sink_->mu);
    auto it = sink_->callback_ids.find(conn);
    if (it == sink_->callback_ids.end()) return;
    id = it->second;
    sink_->callback_ids.erase(it);
  }
  // Fails (after removing it locally) when the daemon is gone: expected.
  if (virConnectDomainEventDeregisterAny(conn, id) < 0) virResetLastError();
}

int LifecycleEventSource::OnLifecycle(virConnectPtr /*conn*/, virDomainPtr dom, int event,
                                      int detail, void* opaque) {
  const Sink& sink = **static_cast<std::shared_ptr<Sink>*>(opaque);
  v1::LifecycleEvent copy;
  v1::LifecycleEvent* e = &copy;
  // All three read the event's own domain object: no round trip.
  e->set_domain_uuid(DomainUuid(dom));
  e->set_domain_name(DomainName(dom));
  e->set_domain_id(DomainId(dom));
  e->set_type(ToProtoEventType(event));
  e->set_detail(EventDetailName(event, detail));
  e->set_type_code(event);
  e->set_detail_code(detail);
  if (event == VIR_DOMAIN_EVENT_DEFINED || event == VIR_DOMAIN_EVENT_UNDEFINED) {
    sink.cache->Invalidate(e->domain_uuid());  // redefined: its static facts may differ
  }
  sink.mirror->OnEvent(std::move(copy));
  return 0;
}

void LifecycleEventSource::FreeOpaque(void* opaque) {
  delete static_cast<std::shared_ptr<Sink>*>(opaque);
}

}  // namespace virtgate
