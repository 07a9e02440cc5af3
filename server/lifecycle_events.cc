#include "server/lifecycle_events.h"

#include "server/domain_state.h"
#include "server/libvirt_errors.h"

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
  return absl::OkStatus();
}

int LifecycleEventSource::OnLifecycle(virConnectPtr /*conn*/, virDomainPtr dom, int event,
                                      int detail, void* opaque) {
  const Sink& sink = **static_cast<std::shared_ptr<Sink>*>(opaque);
  v1::WatchLifecycleResponse message;
  v1::LifecycleEvent* e = message.mutable_event();
  // All three read the event's own domain object: no round trip.
  char uuid[VIR_UUID_STRING_BUFLEN] = {0};
  virDomainGetUUIDString(dom, uuid);
  e->set_domain_uuid(uuid);
  const char* name = virDomainGetName(dom);
  e->set_domain_name(name ? name : "");
  const unsigned int id = virDomainGetID(dom);
  e->set_domain_id(id == static_cast<unsigned int>(-1) ? 0 : id);
  e->set_type(ToProtoEventType(event));
  e->set_detail(EventDetailName(event, detail));
  e->set_type_code(event);
  e->set_detail_code(detail);
  if (event == VIR_DOMAIN_EVENT_DEFINED || event == VIR_DOMAIN_EVENT_UNDEFINED) {
    sink.cache->Invalidate(uuid);  // redefined: its static facts may differ
  }
  sink.hub->Publish(std::move(message));
  return 0;
}

void LifecycleEventSource::FreeOpaque(void* opaque) {
  delete static_cast<std::shared_ptr<Sink>*>(opaque);
}

}  // namespace virtgate
