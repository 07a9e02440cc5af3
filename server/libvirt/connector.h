// How virtgated opens libvirt connections and paces reopening them: the one
// helper both the call ConnectionPool and the LifecycleFeed use.
//
// - OpenConnection: virConnectOpenAuth (read-only unless configured) with
//   credentials from the auth file and never a prompt (NoPromptAuth), then on
//   remote URIs (every daemon URI, qemu:///system included) keepalive and a
//   close callback that tells a CloseListener why the connection died.
//   In-process drivers (test:///default) have neither: they cannot be lost.
//   Blocks for as long as libvirtd takes to answer (forever while it is
//   stopped), so only threads that may block call it.
// - Backoff: exponential with jitter, so K connections (and many servers
//   restarting together) do not reconnect in lockstep.
// - ReconnectSignal: when one of them reaches libvirtd again, the others
//   retry at once instead of waiting out their backoff, so health, host
//   facts and events come back together.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/libvirt/handles.h"

namespace virtgate {

struct ConnectOptions {
  std::string uri = "test:///default";
  bool read_only = true;
  // libvirt keepalive (remote URIs): ping every interval seconds, give up
  // after count unanswered pings. interval <= 0 disables it.
  int keepalive_interval_s = 5;
  int keepalive_count = 5;
  // A libvirt auth.conf (--libvirt_auth_file, checked by CheckAuthFile),
  // handed to libvirt as the URI's authfile=. Empty: libvirt's own search
  // ($LIBVIRT_AUTH_FILE, $XDG_CONFIG_HOME/libvirt/auth.conf,
  // /etc/libvirt/auth.conf).
  std::string auth_file;
};

// Told when a connection opened by OpenConnection closes. Called on the
// thread that noticed (libvirt's event loop, or a thread inside a call on
// that connection): record and wake, nothing more; never call libvirt.
class CloseListener {
 public:
  virtual ~CloseListener() = default;
  // `tag` is the one given to OpenConnection; `reason` is libvirt's
  // ("end of file", "keepalive timeout", ...).
  virtual void OnConnectionClosed(uint64_t tag, const std::string& reason) = 0;
};

// Opens one connection. `listener` (held weakly, so it may go away first)
// hears of its close with `tag`. Errors are libvirt's, mapped, and name
// `options.uri` (never the auth file's contents); a credential libvirt asked
// for and did not get is named (UNAUTHENTICATED, see NoPromptAuth).
absl::StatusOr<ConnectHandle> OpenConnection(const ConnectOptions& options,
                                             std::weak_ptr<CloseListener> listener, uint64_t tag);

// Drops the close callback registration (which holds a reference to the
// connection) before the connection is let go. Local; never blocks on
// libvirtd. Harmless if there is none.
void ForgetCloseCallback(virConnectPtr conn);

// A connection that was up at least this long before it died is reopened
// at once; one that died sooner (a daemon crashing at every connection)
// waits out its Backoff.
inline constexpr absl::Duration kStableAfter = absl::Seconds(10);

// Waits between attempts to open: starts at `initial`, doubles up to `max`,
// each wait drawn from [half, all] of the current step. Not thread-safe.
class Backoff {
 public:
  Backoff(absl::Duration initial, absl::Duration max) : initial_(initial), max_(max) {}
  // The wait before the next attempt, after a failed one.
  absl::Duration Next();
  void Reset() { step_ = absl::ZeroDuration(); }

 private:
  const absl::Duration initial_;
  const absl::Duration max_;
  absl::Duration step_ = absl::ZeroDuration();
  absl::BitGen rng_;
};

// Tells everything that reconnects to one libvirtd that one of them reached
// it. Thread-safe.
class ReconnectSignal {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    // Retry any connection that is waiting out its backoff now. Must only
    // take the listener's own short lock; never blocks.
    virtual void RetryNow() = 0;
  };

  void Add(Listener* listener);
  // After Remove returns, the listener is not called again.
  void Remove(Listener* listener);
  // `from` opened a connection after a failure: wake the others.
  void Reached(const Listener* from);

 private:
  absl::Mutex mu_;
  std::vector<Listener*> listeners_ ABSL_GUARDED_BY(mu_);
};

// libvirt's close reasons (virConnectCloseReason), as words.
const char* CloseReasonName(int reason);

}  // namespace virtgate
