#include "server/base/service_manager.h"

#include <systemd/sd-daemon.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace virtgate {
namespace {

void Notify(const std::string& state) {
  // unset_environment = 0: a child would not inherit the socket anyway
  // (virtgated starts none), and the variable tells `ps e` readers why.
  const int r = sd_notify(0, state.c_str());
  if (r < 0) LogWarning("sd_notify(", state, "): error ", -r);
}

}  // namespace

void ServiceManager::Ready(absl::string_view status) {
  Notify(absl::StrCat("READY=1\nSTATUS=", status));
}

void ServiceManager::Stopping() { Notify("STOPPING=1\nSTATUS=shutting down"); }

}  // namespace virtgate
