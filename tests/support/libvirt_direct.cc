#include "tests/support/libvirt_direct.h"

#include <libvirt/virterror.h>

#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/libvirt/handles.h"

namespace virtgate::testing {

absl::Status EnsureEventLoop() {
  static std::once_flag once;
  static absl::Status* status = nullptr;
  std::call_once(once, [] {
    // Errors are read and reported by the caller, not printed by libvirt.
    virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
      status = new absl::Status(LastError("libvirt event loop"));
      return;
    }
    status = new absl::Status();
    // Runs until the process exits; events and keepalives need it.
    std::thread([] {
      while (true) virEventRunDefaultImpl();
    }).detach();
  });
  return *status;
}

absl::Status LastError(absl::string_view what) {
  const virError* e = virGetLastError();
  std::string message = absl::StrCat(what, ": ", e && e->message ? e->message : "unknown error",
                                     " (libvirt error ", e ? e->code : -1, ")");
  const int code = e ? e->code : -1;
  virResetLastError();
  if (code == VIR_ERR_NO_DOMAIN) return absl::NotFoundError(message);
  return absl::InternalError(message);
}

absl::StatusOr<std::map<std::string, Truth>> GroundTruth(virConnectPtr conn,
                                                         const std::string& prefix,
                                                         unsigned int flags) {
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn, &doms, flags);
  if (n < 0) return LastError("virConnectListAllDomains");
  std::map<std::string, Truth> out;
  for (DomainHandle& d : AdoptDomainArray(doms, n)) {
    Truth t;
    t.name = DomainName(d.get());
    if (!absl::StartsWith(t.name, prefix)) continue;
    if (virDomainGetState(d.get(), &t.state, &t.reason, 0) < 0) {
      absl::Status s = LastError("virDomainGetState " + t.name);
      if (absl::IsNotFound(s)) continue;  // undefined since it was listed
      return s;
    }
    t.id = static_cast<int>(DomainId(d.get()));
    out[DomainUuid(d.get())] = t;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<DirectEvents>> DirectEvents::Subscribe(virConnectPtr conn,
                                                                      std::string prefix) {
  std::unique_ptr<DirectEvents> events(new DirectEvents(conn, std::move(prefix)));
  events->callback_id_ = virConnectDomainEventRegisterAny(
      conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      VIR_DOMAIN_EVENT_CALLBACK(&DirectEvents::OnLifecycle), events.get(), nullptr);
  if (events->callback_id_ < 0) return LastError("virConnectDomainEventRegisterAny");
  return events;
}

DirectEvents::~DirectEvents() {
  if (callback_id_ >= 0) virConnectDomainEventDeregisterAny(conn_, callback_id_);
}

int DirectEvents::OnLifecycle(virConnectPtr /*conn*/, virDomainPtr dom, int event, int detail,
                              void* opaque) {
  auto* self = static_cast<DirectEvents*>(opaque);
  Event e{DomainName(dom), DomainUuid(dom), event, detail, absl::Now()};
  if (!absl::StartsWith(e.name, self->prefix_)) return 0;
  absl::MutexLock lock(&self->mu_);
  self->events_.push_back(std::move(e));
  return 0;
}

std::vector<DirectEvents::Event> DirectEvents::Events() {
  absl::MutexLock lock(&mu_);
  return events_;
}

bool DirectEvents::WaitForEvent(const std::function<bool(const Event&)>& pred,
                                absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  size_t checked = 0;
  auto found = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (; checked < events_.size(); ++checked) {
      if (pred(events_[checked])) return true;
    }
    return false;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&found), timeout);
}

}  // namespace virtgate::testing
