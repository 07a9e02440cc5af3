#include "server/libvirt/connector.h"

#include <libvirt/virterror.h>

#include <algorithm>

#include "server/base/log.h"
#include "server/libvirt/auth_file.h"
#include "server/libvirt/errors.h"
#include "server/libvirt/no_prompt_auth.h"

namespace virtgate {
namespace {

// Opaque data handed to libvirt's close callback; libvirt frees it.
struct CloseCookie {
  std::weak_ptr<CloseListener> listener;
  uint64_t tag;
};

void OnClose(virConnectPtr /*conn*/, int reason, void* opaque) {
  auto* cookie = static_cast<CloseCookie*>(opaque);
  if (std::shared_ptr<CloseListener> listener = cookie->listener.lock()) {
    listener->OnConnectionClosed(cookie->tag, CloseReasonName(reason));
  }
}

void FreeCookie(void* opaque) { delete static_cast<CloseCookie*>(opaque); }

}  // namespace

const char* CloseReasonName(int reason) {
  static constexpr const char* kReasons[] = {"error", "end of file", "keepalive timeout",
                                             "client closed"};
  return reason >= 0 && reason <= 3 ? kReasons[reason] : "unknown";
}

absl::StatusOr<ConnectHandle> OpenConnection(const ConnectOptions& options,
                                             std::weak_ptr<CloseListener> listener,
                                             uint64_t tag) {
  const unsigned int flags = options.read_only ? VIR_CONNECT_RO : 0;
  const std::string uri = options.auth_file.empty()
                              ? options.uri
                              : UriWithAuthFile(options.uri, options.auth_file);
  NoPromptAuth auth;
  ConnectHandle conn(virConnectOpenAuth(uri.c_str(), auth.get(), flags));
  if (!conn) {
    // Named after options.uri: `uri` is the same plus the file's path.
    absl::Status error = LastLibvirtError(options.uri);
    if (auth.asked()) return auth.MissingCredentials(error.code(), options.uri, options.auth_file);
    return error;
  }
  // Only the remote driver has keepalive and close callbacks; in-process
  // drivers (test:///, qemu:///embed) refuse keepalive, which tells them
  // apart. Interval -1 (keepalive off) still answers the question.
  const int interval = options.keepalive_interval_s > 0 ? options.keepalive_interval_s : -1;
  const bool remote = virConnectSetKeepAlive(conn.get(), interval,
                                             static_cast<unsigned>(options.keepalive_count)) == 0;
  if (!remote) {
    LogDebug(LastLibvirtError("keepalive").message());
    return conn;  // in-process: nothing to lose, no close callback
  }
  // libvirt owns the cookie: it frees it when the callback has fired, was
  // unregistered, or the connection is disposed.
  auto* cookie = new CloseCookie{std::move(listener), tag};
  if (virConnectRegisterCloseCallback(conn.get(), &OnClose, cookie, &FreeCookie) < 0) {
    delete cookie;
    LogDebug(LastLibvirtError("close callback").message());
  }
  return conn;
}

void ForgetCloseCallback(virConnectPtr conn) {
  // Fails when the callback has already fired (and so was released).
  if (virConnectUnregisterCloseCallback(conn, &OnClose) < 0) virResetLastError();
}

absl::Duration Backoff::Next() {
  step_ = step_ == absl::ZeroDuration() ? initial_ : std::min(step_ * 2, max_);
  return step_ * absl::Uniform(rng_, 0.5, 1.0);
}

void ReconnectSignal::Add(Listener* listener) {
  absl::MutexLock lock(&mu_);
  listeners_.push_back(listener);
}

void ReconnectSignal::Remove(Listener* listener) {
  absl::MutexLock lock(&mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener),
                   listeners_.end());
}

void ReconnectSignal::Reached(const Listener* from) {
  // Under the lock, so a listener being removed is never called after.
  absl::MutexLock lock(&mu_);
  for (Listener* l : listeners_) {
    if (l != from) l->RetryNow();
  }
}

}  // namespace virtgate
