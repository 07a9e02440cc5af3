// Layer 2 of the test support (libvirt only, no server code): the tests' own,
// direct libvirt side: the event loop, errors, libvirt's ground truth for a
// set of domains, and a direct lifecycle subscription (what libvirt itself
// delivers, to compare virtgate's stream with).
#pragma once

#include <libvirt/libvirt.h>

#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace virtgate::testing {

// virEventRegisterDefaultImpl plus a thread running the loop, once per
// process, before the first connection is opened. Thread-safe. A test
// binary that also runs virtgated in-process gets the server's loop thread
// too (it starts its own); registering twice is harmless, and libvirt
// dispatches on one of them at a time.
absl::Status EnsureEventLoop();

// The calling thread's last libvirt error as a status naming `what`.
absl::Status LastError(absl::string_view what);

// libvirt's own answer for one domain.
struct Truth {
  std::string name;
  int id = 0;  // 0 while inactive
  int state = 0;
  int reason = 0;
  friend bool operator==(const Truth& a, const Truth& b) {
    return a.name == b.name && a.id == b.id && a.state == b.state && a.reason == b.reason;
  }
  friend std::ostream& operator<<(std::ostream& os, const Truth& t) {
    return os << t.name << " id=" << t.id << " state=" << t.state << "/" << t.reason;
  }
};
// uuid -> Truth for every domain whose name starts with `prefix`, from
// virConnectListAllDomains (with `flags`) and virDomainGetState on `conn`.
// A domain undefined between the two is left out.
absl::StatusOr<std::map<std::string, Truth>> GroundTruth(virConnectPtr conn,
                                                         const std::string& prefix,
                                                         unsigned int flags = 0);

// Every lifecycle event libvirt delivers on `conn` (whose connection must
// outlive it) for domains whose name starts with `prefix`.
class DirectEvents {
 public:
  struct Event {
    std::string name;
    std::string uuid;
    int type = 0;
    int detail = 0;
    absl::Time received;
  };
  static absl::StatusOr<std::unique_ptr<DirectEvents>> Subscribe(virConnectPtr conn,
                                                                 std::string prefix);
  ~DirectEvents();

  std::vector<Event> Events();
  // Waits until some event satisfies `pred`.
  bool WaitForEvent(const std::function<bool(const Event&)>& pred, absl::Duration timeout);

 private:
  DirectEvents(virConnectPtr conn, std::string prefix) : conn_(conn), prefix_(std::move(prefix)) {}
  static int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail,
                         void* opaque);

  virConnectPtr conn_;
  const std::string prefix_;
  int callback_id_ = -1;
  absl::Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate::testing
