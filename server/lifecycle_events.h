// LifecycleEventSource: the server's one libvirt lifecycle subscription.
//
// Register() adds a VIR_DOMAIN_EVENT_ID_LIFECYCLE callback on the pool's
// event connection (ConnectionPool::Options::on_event_connection calls it on
// every (re)open). The callback runs on libvirt's event loop thread: it copies
// the event (uuid, name, id, type, detail), drops the domain's cached facts on
// DEFINED/UNDEFINED, hands the copy to the LifecycleMirror (which publishes
// it to the EventHub) and returns. It makes no
// libvirt round trip and takes only short, non-nested locks.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>

#include "absl/status/status.h"
#include "server/domain_facts_cache.h"
#include "server/lifecycle_mirror.h"

namespace virtgate {

class LifecycleEventSource {
 public:
  LifecycleEventSource(std::shared_ptr<LifecycleMirror> mirror,
                       std::shared_ptr<DomainFactsCache> cache)
      : sink_(std::make_shared<Sink>(Sink{std::move(mirror), std::move(cache)})) {}

  // Thread-safe; callable from any thread that may call libvirt.
  absl::Status Register(virConnectPtr conn) const;

 private:
  struct Sink {
    std::shared_ptr<LifecycleMirror> mirror;
    std::shared_ptr<DomainFactsCache> cache;
  };
  static int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail,
                         void* opaque);
  static void FreeOpaque(void* opaque);

  std::shared_ptr<Sink> sink_;
};

}  // namespace virtgate
