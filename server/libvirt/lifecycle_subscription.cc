#include "server/libvirt/lifecycle_subscription.h"

#include <libvirt/virterror.h>

#include "server/libvirt/domain_state.h"
#include "server/libvirt/errors.h"
#include "server/libvirt/handles.h"

namespace virtgate {

absl::Status LifecycleSubscription::Register(virConnectPtr conn) {
  // libvirt owns a reference to the cache until it calls FreeOpaque (when
  // the callback is deregistered or the connection is disposed).
  auto* opaque = new std::shared_ptr<DomainCache>(cache_);
  const int id = virConnectDomainEventRegisterAny(
      conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      VIR_DOMAIN_EVENT_CALLBACK(&LifecycleSubscription::OnLifecycle), opaque,
      &LifecycleSubscription::FreeOpaque);
  if (id < 0) {
    delete opaque;
    return LastLibvirtError("virConnectDomainEventRegisterAny(lifecycle)");
  }
  absl::MutexLock lock(&mu_);
  callback_id_ = id;
  return absl::OkStatus();
}

void LifecycleSubscription::Deregister(virConnectPtr conn) {
  int id;
  {
    absl::MutexLock lock(&mu_);
    id = callback_id_;
    callback_id_ = -1;
  }
  // Fails (after removing it locally) when the daemon is gone: expected.
  if (id >= 0 && virConnectDomainEventDeregisterAny(conn, id) < 0) virResetLastError();
}

int LifecycleSubscription::OnLifecycle(virConnectPtr /*conn*/, virDomainPtr dom, int event,
                                       int detail, void* opaque) {
  DomainCache& cache = **static_cast<std::shared_ptr<DomainCache>*>(opaque);
  v1::LifecycleEvent e;
  // All three read the event's own domain object: no round trip.
  e.set_domain_uuid(DomainUuid(dom));
  e.set_domain_name(DomainName(dom));
  e.set_domain_id(DomainId(dom));
  e.set_type(ToProtoEventType(event));
  e.set_detail(EventDetailName(event, detail));
  e.set_type_code(event);
  e.set_detail_code(detail);
  cache.OnEvent(std::move(e));
  return 0;
}

void LifecycleSubscription::FreeOpaque(void* opaque) {
  delete static_cast<std::shared_ptr<DomainCache>*>(opaque);
}

}  // namespace virtgate
