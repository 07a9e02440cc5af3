// LifecycleSubscription: the server's one libvirt lifecycle registration
// (VIR_DOMAIN_EVENT_ID_LIFECYCLE), made by the LifecycleFeed on its own
// connection after every (re)connect.
//
// The callback runs on libvirt's event loop thread: it copies the event
// (uuid, name, id, type, detail), hands the copy to the DomainCache (which
// applies and publishes it) and returns. It makes no libvirt round trip and
// takes only short, non-nested locks.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/state/domain_cache.h"

namespace virtgate {

class LifecycleSubscription {
 public:
  explicit LifecycleSubscription(std::shared_ptr<DomainCache> cache) : cache_(std::move(cache)) {}

  // Registers on `conn` (one registration at a time). UNIMPLEMENTED for a
  // driver without lifecycle events.
  absl::Status Register(virConnectPtr conn);
  // Removes the registration, if any. Call before closing its connection:
  // libvirt's registration holds a reference to it, which would otherwise
  // never be freed (one leaked connection per reconnect). On a dead
  // connection this is local and immediate.
  void Deregister(virConnectPtr conn);

 private:
  static int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail,
                         void* opaque);
  static void FreeOpaque(void* opaque);

  const std::shared_ptr<DomainCache> cache_;
  absl::Mutex mu_;
  int callback_id_ ABSL_GUARDED_BY(mu_) = -1;
};

}  // namespace virtgate
