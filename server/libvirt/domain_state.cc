#include "server/libvirt/domain_state.h"

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

namespace {

// Event detail -> the state reason it leaves, per event type (libvirt 9.0),
// indexed by detail; 0 where libvirt's reason enum has no match.
constexpr int kStartedReasons[] = {VIR_DOMAIN_RUNNING_BOOTED, VIR_DOMAIN_RUNNING_MIGRATED,
                                   VIR_DOMAIN_RUNNING_RESTORED,
                                   VIR_DOMAIN_RUNNING_FROM_SNAPSHOT,
                                   VIR_DOMAIN_RUNNING_WAKEUP};
constexpr int kSuspendedReasons[] = {
    VIR_DOMAIN_PAUSED_USER,     VIR_DOMAIN_PAUSED_MIGRATION, VIR_DOMAIN_PAUSED_IOERROR,
    VIR_DOMAIN_PAUSED_WATCHDOG, VIR_DOMAIN_PAUSED_UNKNOWN,   VIR_DOMAIN_PAUSED_FROM_SNAPSHOT,
    VIR_DOMAIN_PAUSED_UNKNOWN,  VIR_DOMAIN_PAUSED_POSTCOPY,  VIR_DOMAIN_PAUSED_POSTCOPY_FAILED};
constexpr int kResumedReasons[] = {VIR_DOMAIN_RUNNING_UNPAUSED, VIR_DOMAIN_RUNNING_MIGRATED,
                                   VIR_DOMAIN_RUNNING_FROM_SNAPSHOT,
                                   VIR_DOMAIN_RUNNING_POSTCOPY,
                                   VIR_DOMAIN_RUNNING_POSTCOPY_FAILED};
constexpr int kStoppedReasons[] = {VIR_DOMAIN_SHUTOFF_SHUTDOWN,  VIR_DOMAIN_SHUTOFF_DESTROYED,
                                   VIR_DOMAIN_SHUTOFF_CRASHED,   VIR_DOMAIN_SHUTOFF_MIGRATED,
                                   VIR_DOMAIN_SHUTOFF_SAVED,     VIR_DOMAIN_SHUTOFF_FAILED,
                                   VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT};

template <size_t N>
StateAndReason With(int state, const int (&reasons)[N], int detail) {
  const bool known = detail >= 0 && static_cast<size_t>(detail) < N;
  return {state, known ? reasons[detail] : 0};
}

}  // namespace

std::optional<StateAndReason> StateAfterEvent(int libvirt_event, int detail) {
  switch (libvirt_event) {
    case VIR_DOMAIN_EVENT_STARTED: return With(VIR_DOMAIN_RUNNING, kStartedReasons, detail);
    case VIR_DOMAIN_EVENT_SUSPENDED: return With(VIR_DOMAIN_PAUSED, kSuspendedReasons, detail);
    case VIR_DOMAIN_EVENT_RESUMED: return With(VIR_DOMAIN_RUNNING, kResumedReasons, detail);
    case VIR_DOMAIN_EVENT_STOPPED: return With(VIR_DOMAIN_SHUTOFF, kStoppedReasons, detail);
    case VIR_DOMAIN_EVENT_SHUTDOWN:
      return StateAndReason{VIR_DOMAIN_SHUTDOWN, VIR_DOMAIN_SHUTDOWN_UNKNOWN};
    case VIR_DOMAIN_EVENT_PMSUSPENDED:
      return StateAndReason{VIR_DOMAIN_PMSUSPENDED, VIR_DOMAIN_PMSUSPENDED_UNKNOWN};
    case VIR_DOMAIN_EVENT_CRASHED:
      // A guest that loaded a crash kernel runs on; otherwise it is crashed.
      if (detail == VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED) return std::nullopt;
      return StateAndReason{VIR_DOMAIN_CRASHED, detail == VIR_DOMAIN_EVENT_CRASHED_PANICKED
                                                    ? VIR_DOMAIN_CRASHED_PANICKED
                                                    : VIR_DOMAIN_CRASHED_UNKNOWN};
    default: return std::nullopt;
  }
}

bool IsActiveState(v1::DomainState s) {
  // CRASHED is the state of a guest that panicked and was preserved: its
  // QEMU still runs (a crash that ends the run is SHUTOFF/crashed).
  return s == v1::DOMAIN_STATE_RUNNING || s == v1::DOMAIN_STATE_PAUSED ||
         s == v1::DOMAIN_STATE_BLOCKED || s == v1::DOMAIN_STATE_SHUTDOWN ||
         s == v1::DOMAIN_STATE_PMSUSPENDED || s == v1::DOMAIN_STATE_CRASHED;
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
