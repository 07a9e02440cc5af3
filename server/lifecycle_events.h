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

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/domain_facts_cache.h"
#include "server/lifecycle_mirror.h"

namespace virtgate {

class LifecycleEventSource {
 public:
  LifecycleEventSource(std::shared_ptr<LifecycleMirror> mirror,
                       std::shared_ptr<DomainFactsCache> cache)
      : sink_(std::make_shared<Sink>()) {
    sink_->mirror = std::move(mirror);
    sink_->cache = std::move(cache);
  }

  // Thread-safe; callable from any thread that may call libvirt.
  absl::Status Register(virConnectPtr conn) const;
  // Removes the registration made on `conn`, if any. Call before closing
  // it: libvirt's registration holds a reference to the connection, which
  // would otherwise never be freed (one leaked connection per reconnect).
  // On a dead connection this is local and immediate.
  void Deregister(virConnectPtr conn) const;

 private:
  struct Sink {
    std::shared_ptr<LifecycleMirror> mirror;
    std::shared_ptr<DomainFactsCache> cache;
    absl::Mutex mu;
    absl::flat_hash_map<virConnectPtr, int> callback_ids ABSL_GUARDED_BY(mu);
  };
  static int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail,
                         void* opaque);
  static void FreeOpaque(void* opaque);

  std::shared_ptr<Sink> sink_;
};

}  // namespace virtgate
