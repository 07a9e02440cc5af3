#include "server/libvirt/event_loop.h"

#include <libvirt/libvirt.h>

#include <mutex>
#include <thread>

#include "server/libvirt/errors.h"
#include "server/base/log.h"

namespace virtgate {
namespace {

void RunLoop() {
  for (;;) {
    if (virEventRunDefaultImpl() < 0) {
      // Only fails on a broken poll(); log it and keep the loop alive, since
      // keepalive and events depend on it.
      LogError(LastLibvirtError("libvirt event loop").message());
    }
  }
}

absl::Status StartOnce() {
  if (virInitialize() < 0) return LastLibvirtError("virInitialize");
  RouteLibvirtErrorsToLog();
  if (virEventRegisterDefaultImpl() < 0) return LastLibvirtError("virEventRegisterDefaultImpl");
  // Detached: the registration cannot be undone, so the loop lives as long as
  // the process; it only sleeps in poll() when there is nothing to do.
  std::thread(RunLoop).detach();
  return absl::OkStatus();
}

}  // namespace

absl::Status EnsureLibvirtEventLoop() {
  static std::once_flag once;
  static absl::Status* status = nullptr;  // leaked on purpose: lives until exit
  std::call_once(once, [] { status = new absl::Status(StartOnce()); });
  return *status;
}

}  // namespace virtgate
