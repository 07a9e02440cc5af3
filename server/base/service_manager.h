// ServiceManager: tells a service manager (systemd's Type=notify; anything
// that speaks the sd_notify protocol on $NOTIFY_SOCKET) where virtgated is
// in its life, through libsystemd's sd_notify. Without $NOTIFY_SOCKET (run
// by hand, in a container) every call does nothing.
#pragma once

#include "absl/strings/string_view.h"

namespace virtgate {

class ServiceManager {
 public:
  // Serving: the listener is open. `status` is what `systemctl status` shows.
  static void Ready(absl::string_view status);
  // Shutting down (SIGTERM): systemd waits for the exit, up to TimeoutStopSec.
  static void Stopping();
};

}  // namespace virtgate
