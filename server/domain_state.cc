#include "server/domain_state.h"

#include <libvirt/libvirt.h>

#include <array>
#include "absl/strings/string_view.h"

namespace virtgate {

v1::DomainState ToProtoState(int libvirt_state) {
  switch (libvirt_state) {
    case VIR_DOMAIN_RUNNING: return v1::DOMAIN_STATE_RUNNING;
    case VIR_DOMAIN_BLOCKED: return v1::DOMAIN_STATE_BLOCKED;
    case VIR_DOMAIN_PAUSED: return v1::DOMAIN_STATE_PAUSED;
    case VIR_DOMAIN_SHUTDOWN: return v1::DOMAIN_STATE_SHUTDOWN;
    case VIR_DOMAIN_SHUTOFF: return v1::DOMAIN_STATE_SHUTOFF;
    case VIR_DOMAIN_CRASHED: return v1::DOMAIN_STATE_CRASHED;
    case VIR_DOMAIN_PMSUSPENDED: return v1::DOMAIN_STATE_PMSUSPENDED;
    default: return v1::DOMAIN_STATE_NOSTATE;
  }
}

namespace {

// Indexed by the per-state reason enums of libvirt-domain.h (9.0).
constexpr absl::string_view kNostate[] = {"unknown"};
constexpr absl::string_view kRunning[] = {
    "unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
    "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy",
    "postcopy_failed"};
constexpr absl::string_view kBlocked[] = {"unknown"};
constexpr absl::string_view kPaused[] = {
    "unknown", "user", "migration", "save", "dump", "ioerror", "watchdog", "from_snapshot",
    "shutting_down", "snapshot", "crashed", "starting_up", "postcopy", "postcopy_failed"
};
constexpr absl::string_view kShutdown[] = {"unknown", "user"};
constexpr absl::string_view kShutoff[] = {
    "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
    "from_snapshot", "daemon"};
constexpr absl::string_view kCrashed[] = {"unknown", "panicked"};
constexpr absl::string_view kPmsuspended[] = {"unknown"};

template <size_t N>
std::string Pick(const absl::string_view (&names)[N], int reason) {
  if (reason < 0 || static_cast<size_t>(reason) >= N) return "unknown";
  return std::string(names[reason]);
}

}  // namespace

namespace {

// Indexed by the per-type detail enums of libvirt-domain.h (9.0).
constexpr absl::string_view kDefined[] = {"added", "updated", "renamed", "from_snapshot"};
constexpr absl::string_view kUndefined[] = {"removed", "renamed"};
constexpr absl::string_view kStarted[] = {"booted", "migrated", "restored", "from_snapshot",
                                         "wakeup"};
constexpr absl::string_view kSuspended[] = {"paused", "migrated", "ioerror", "watchdog",
                                           "restored", "from_snapshot", "api_error", "postcopy",
                                           "postcopy_failed"};
constexpr absl::string_view kResumed[] = {"unpaused", "migrated", "from_snapshot", "postcopy",
                                         "postcopy_failed"};
constexpr absl::string_view kStopped[] = {"shutdown", "destroyed", "crashed", "migrated",
                                         "saved", "failed", "from_snapshot"};
constexpr absl::string_view kShutdownDetail[] = {"finished", "guest", "host"};
constexpr absl::string_view kPmsuspendedDetail[] = {"memory", "disk"};
constexpr absl::string_view kCrashedDetail[] = {"panicked", "crashloaded"};

}  // namespace

v1::LifecycleEventType ToProtoEventType(int libvirt_event) {
  if (libvirt_event < VIR_DOMAIN_EVENT_DEFINED || libvirt_event > VIR_DOMAIN_EVENT_CRASHED) {
    return v1::LIFECYCLE_EVENT_TYPE_UNSPECIFIED;
  }
  return static_cast<v1::LifecycleEventType>(libvirt_event + 1);
}

std::string EventDetailName(int libvirt_event, int detail) {
  switch (libvirt_event) {
    case VIR_DOMAIN_EVENT_DEFINED: return Pick(kDefined, detail);
    case VIR_DOMAIN_EVENT_UNDEFINED: return Pick(kUndefined, detail);
    case VIR_DOMAIN_EVENT_STARTED: return Pick(kStarted, detail);
    case VIR_DOMAIN_EVENT_SUSPENDED: return Pick(kSuspended, detail);
    case VIR_DOMAIN_EVENT_RESUMED: return Pick(kResumed, detail);
    case VIR_DOMAIN_EVENT_STOPPED: return Pick(kStopped, detail);
    case VIR_DOMAIN_EVENT_SHUTDOWN: return Pick(kShutdownDetail, detail);
    case VIR_DOMAIN_EVENT_PMSUSPENDED: return Pick(kPmsuspendedDetail, detail);
    case VIR_DOMAIN_EVENT_CRASHED: return Pick(kCrashedDetail, detail);
    default: return "unknown";
  }
}

std::string StateReasonName(int libvirt_state, int reason) {
  switch (libvirt_state) {
    case VIR_DOMAIN_NOSTATE: return Pick(kNostate, reason);
    case VIR_DOMAIN_RUNNING: return Pick(kRunning, reason);
    case VIR_DOMAIN_BLOCKED: return Pick(kBlocked, reason);
    case VIR_DOMAIN_PAUSED: return Pick(kPaused, reason);
    case VIR_DOMAIN_SHUTDOWN: return Pick(kShutdown, reason);
    case VIR_DOMAIN_SHUTOFF: return Pick(kShutoff, reason);
    case VIR_DOMAIN_CRASHED: return Pick(kCrashed, reason);
    case VIR_DOMAIN_PMSUSPENDED: return Pick(kPmsuspended, reason);
    default: return "unknown";
  }
}

}  // namespace virtgate
