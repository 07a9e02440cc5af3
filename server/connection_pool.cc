#include "server/connection_pool.h"

#include <libvirt/virterror.h>

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/libvirt_errors.h"
#include "server/libvirt_event_loop.h"
#include "server/libvirt_handles.h"
#include "server/log.h"

namespace virtgate {

// Shared by the pool, its leases, its close callbacks and its maintenance
// thread, so that any of them outliving the pool (a worker abandoned in a
// stuck libvirt call, a maintenance thread stuck opening) stays valid.
class ConnectionPool::Core {
 public:
  explicit Core(Options options) : options_(std::move(options)), slots_(options_.size) {}

  struct Slot {
    ConnectHandle conn;         // null while closed
    int in_flight = 0;          // leases out on the current connection
    int held = 0;               // Hold()s out: no new leases while any
    bool broken = false;        // seen dead; the maintenance thread replaces it
    bool retired = false;       // broken by Retire(): a call on it is stuck
    absl::Time next_attempt = absl::InfinitePast();
    absl::Duration backoff = absl::ZeroDuration();
    // Bumps whenever the slot's connection is dropped or opened, so releases
    // of leases on an older connection, and its close callbacks, are ignored.
    uint64_t generation = 0;
  };

  // Opaque data handed to libvirt's close callback.
  struct CloseCookie {
    std::weak_ptr<Core> core;
    int slot;
    uint64_t generation;
  };

  struct Acquired {
    int slot;
    uint64_t generation;
    virConnectPtr conn;
  };

  const Options& options() const { return options_; }

  absl::StatusOr<Acquired> Acquire(absl::Time deadline) {
    const absl::Time cap = absl::Now() + options_.max_admission_wait;
    const bool capped_by_pool = cap < deadline;
    absl::MutexLock lock(&mu_);
    for (;;) {
      if (stopping_) return absl::UnavailableError("server shutting down");
      int best = -1;
      int live = 0;
      for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
        const Slot& s = slots_[i];
        if (!s.conn || s.broken) continue;
        ++live;
        if (s.in_flight >= options_.max_calls_per_connection || s.held > 0) continue;
        // Least loaded; on a tie, not the event connection (slot 0): a call
        // stuck there cannot be moved off it (see Retire).
        if (best < 0 || s.in_flight < slots_[best].in_flight ||
            (s.in_flight == slots_[best].in_flight && best == 0)) {
          best = i;
        }
      }
      if (best >= 0) {
        Slot& s = slots_[best];
        ++s.in_flight;
        virConnectRef(s.conn.get());  // the lease's own reference
        return Acquired{best, s.generation, s.conn.get()};
      }
      if (live == 0) return UnavailableLocked();
      // Every live connection is at its admission cap: wait for a release.
      const bool woke = mu_.AwaitWithDeadline(
          absl::Condition(this, &Core::SlotFreeOrDownLocked), std::min(deadline, cap));
      if (!woke) {
        if (capped_by_pool) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "all ", live, " libvirt connections are at their limit of ",
              options_.max_calls_per_connection, " concurrent calls (--max_calls_per_connection)"));
        }
        return absl::DeadlineExceededError(
            "deadline passed while waiting for a free libvirt connection");
      }
    }
  }

  void Release(int slot, uint64_t generation, virConnectPtr conn, bool hold) {
    // Cheap and local (no round trip): catches a connection that died under
    // this call even on drivers without a close callback.
    const bool alive = virConnectIsAlive(conn) == 1;
    {
      absl::MutexLock lock(&mu_);
      Slot& s = slots_[slot];
      if (s.generation == generation) {
        --(hold ? s.held : s.in_flight);
        if (!alive && !s.broken) {
          s.broken = true;
          last_error_ = absl::StrCat(options_.uri, ": connection is no longer alive");
          wake_ = true;
        }
      }
    }
    virConnectClose(conn);  // drop the lease's reference
  }

  void OnClosed(int slot, uint64_t generation, int reason) {
    static constexpr const char* kReasons[] = {"error", "end of file", "keepalive timeout",
                                               "client closed"};
    const char* why = reason >= 0 && reason <= 3 ? kReasons[reason] : "unknown";
    absl::MutexLock lock(&mu_);
    Slot& s = slots_[slot];
    if (s.generation != generation || s.broken) return;
    s.broken = true;
    last_error_ = absl::StrCat(options_.uri, ": connection closed (", why, ")");
    wake_ = true;
  }

  std::optional<Acquired> Hold(virConnectPtr conn) {
    absl::MutexLock lock(&mu_);
    // With a single connection, holding it would stop every call until the
    // held one returns: calls share it with the held call instead.
    if (slots_.size() == 1) return std::nullopt;
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
      Slot& s = slots_[i];
      if (s.conn && s.conn.get() == conn) {
        ++s.held;
        virConnectRef(conn);  // the lease's own reference
        return Acquired{i, s.generation, conn};
      }
    }
    return std::nullopt;
  }

  bool Retire(virConnectPtr conn) {
    absl::MutexLock lock(&mu_);
    for (size_t i = 1; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.conn && s.conn.get() == conn && !s.broken) {
        s.broken = true;
        s.retired = true;
        wake_ = true;
        return true;
      }
    }
    return false;
  }

  absl::Status UnavailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::UnavailableError(absl::StrCat(
        "hypervisor unavailable: ", last_error_.empty() ? options_.uri : last_error_));
  }

  // Closes connections seen dead. Their RPCs fail at once (the client side
  // is already closed), so this does not block on a stalled daemon.
  void DropBroken() {
    struct Closing {
      int slot;
      ConnectHandle conn;
      bool retired;
    };
    std::vector<Closing> to_close;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
        Slot& s = slots_[i];
        if (s.conn && !s.broken && virConnectIsAlive(s.conn.get()) != 1) {
          s.broken = true;
          last_error_ = absl::StrCat(options_.uri, ": connection is no longer alive");
        }
        if (s.conn && s.broken) {
          to_close.push_back({i, std::move(s.conn), s.retired});
          s.broken = false;
          s.retired = false;
          s.in_flight = 0;  // leases still out belong to the old generation
          s.held = 0;
          ++s.generation;
          s.next_attempt = now;  // first reconnect attempt is immediate
        }
      }
    }
    for (auto& [slot, conn, retired] : to_close) {
      if (retired) {
        LogWarning("libvirt connection ", slot, " to ", options_.uri,
                   " retired: a call on it is stuck; opening a replacement");
        // The registration holds a reference: kept, it would keep this live
        // connection open for as long as libvirtd runs. Unregistering is
        // local (the stuck call does not hold it up); the connection closes
        // when the stuck call returns and drops the last reference.
        UnregisterClose(conn.get());
        conn.reset();
        continue;
      }
      LogWarning("libvirt connection ", slot, " to ", options_.uri, " lost; reopening");
      UnregisterClose(conn.get());
      // (Dropping the registrations is a call, but on a client that is
      // already closed or closing, which fails at once without entering its
      // I/O loop: safe beside calls still out on it. Only Retire() drops a
      // live connection, and never this one.)
      if (slot == 0 && options_.on_event_connection_closing) {
        options_.on_event_connection_closing(conn.get());
      }
      conn.reset();  // leases still out hold their own references
      if (slot == 0 && options_.on_event_connection_lost) {
        options_.on_event_connection_lost(LastError());
      }
    }
  }

  // Opens the connections that are due, one by one; stops early on Stop().
  void OpenDue() {
    // Slot 0 last: its event setup lists every domain, and the other slots
    // can serve calls meanwhile. (slots_ never resizes.)
    for (int i = 1; i <= options_.size; ++i) {
      const int slot = i % options_.size;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        const Slot& s = slots_[slot];
        if (s.conn || s.next_attempt > absl::Now()) continue;
      }
      uint64_t generation = 0;
      absl::StatusOr<ConnectHandle> opened = Open(slot, &generation);
      if (opened.ok() && slot == 0 && options_.on_event_connection) {
        if (absl::Status s = options_.on_event_connection(opened->get()); !s.ok()) {
          LogError("cannot set up event delivery on ", options_.uri, ": ", s.message());
          UnregisterClose(opened->get());
          opened = absl::UnavailableError(absl::StrCat(options_.uri, ": ", s.message()));
        }
      }
      if (!opened.ok() && slot == 0 && options_.on_event_connection_lost) {
        options_.on_event_connection_lost(std::string(opened.status().message()));
      }
      ConnectHandle discard;
      {
        absl::MutexLock lock(&mu_);
        Slot& s = slots_[slot];
        if (opened.ok() && !stopping_ && s.generation == generation) {
          s.conn = std::move(*opened);
          s.backoff = absl::ZeroDuration();
        } else if (opened.ok()) {
          discard = std::move(*opened);  // stopped meanwhile: close it below
        } else {
          last_error_ = std::string(opened.status().message());
          s.backoff = s.backoff == absl::ZeroDuration()
                          ? options_.initial_backoff
                          : std::min(s.backoff * 2, options_.max_backoff);
          // Jitter keeps K slots (and many servers restarting together)
          // from reconnecting in lockstep.
          const double jitter = absl::Uniform(rng_, 0.5, 1.0);
          s.next_attempt = absl::Now() + s.backoff * jitter;
          // (Only losses and recoveries are logged above debug.)
          LogDebug("libvirt connection ", slot, ": cannot open (", last_error_,
                   "); next attempt in ", absl::FormatDuration(s.backoff * jitter));
        }
      }
      if (discard) {
        UnregisterClose(discard.get());
        if (slot == 0 && options_.on_event_connection_closing) {
          options_.on_event_connection_closing(discard.get());
        }
      }
      NotifyIfChanged();
    }
  }

  void MaintenanceLoop() {
    for (bool first = true;; first = false) {
      // Report a loss before trying to reopen: an open may block for as long
      // as libvirtd is stalled. (Nothing to report before the first try.)
      DropBroken();
      if (!first) NotifyIfChanged();
      OpenDue();
      NotifyIfChanged();
      absl::MutexLock lock(&mu_);
      first_pass_done_ = true;
      if (stopping_) break;
      absl::Time wake_at = absl::Now() + options_.check_interval;
      for (const Slot& s : slots_) {
        if (!s.conn) wake_at = std::min(wake_at, s.next_attempt);
      }
      mu_.AwaitWithDeadline(absl::Condition(this, &Core::WakeRequestedLocked), wake_at);
      wake_ = false;
      if (stopping_) break;
    }
    absl::MutexLock lock(&mu_);
    maintenance_exited_ = true;
  }

  // Serialized (notify_mu_), and the value is read under the same lock it is
  // announced under, so an older value can never overtake a newer one.
  void NotifyIfChanged() {
    absl::MutexLock notify(&notify_mu_);
    bool up;
    {
      absl::MutexLock lock(&mu_);
      up = LiveCountLocked() > 0;
      if (announced_up_.has_value() && *announced_up_ == up) return;
      announced_up_ = up;
      if (up) {
        LogInfo("connected to ", options_.uri, " (", LiveCountLocked(), "/", slots_.size(),
                " connections)");
      } else {
        LogWarning("hypervisor unavailable: ", last_error_, "; retrying with backoff");
      }
    }
    if (listener_) listener_(up);
  }

  void SetListener(std::function<void(bool)> listener) {
    absl::MutexLock notify(&notify_mu_);
    listener_ = std::move(listener);
    bool up;
    {
      absl::MutexLock lock(&mu_);
      up = LiveCountLocked() > 0;
    }
    if (listener_) listener_(up);
  }

  bool WaitFirstPass(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &Core::FirstPassDoneLocked), timeout);
  }

  std::string LastError() {
    absl::MutexLock lock(&mu_);
    return last_error_;
  }

  Snapshot GetSnapshot() {
    absl::MutexLock lock(&mu_);
    Snapshot snap;
    snap.connections_up = LiveCountLocked();
    snap.connections_total = static_cast<int>(slots_.size());
    for (const Slot& s : slots_) snap.in_flight += s.in_flight;
    snap.last_error = last_error_;
    return snap;
  }

  // Stops the maintenance thread (waiting for it until `deadline`) and takes
  // the connections out of the pool. Returns them for the caller to close.
  struct Stopped {
    int slot;
    ConnectHandle conn;
    bool busy;  // leases still out: calls (perhaps stuck) on it
  };
  std::vector<Stopped> Stop(absl::Time deadline, bool* maintenance_stopped) {
    std::vector<Stopped> conns;
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_ = true;
    *maintenance_stopped = mu_.AwaitWithDeadline(
        absl::Condition(this, &Core::MaintenanceExitedLocked), deadline);
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
      Slot& s = slots_[i];
      if (s.conn) conns.push_back({i, std::move(s.conn), s.in_flight > 0 || s.held > 0});
      ++s.generation;
    }
    return conns;
  }

  void CloseAll(std::vector<Stopped> conns) {
    for (Stopped& c : conns) {
      UnregisterClose(c.conn.get());
      // Dropping the registrations is a call of its own: not beside calls
      // still on the connection (see "Admission" at the top of the header).
      // The process is ending anyway.
      if (c.slot == 0 && !c.busy && options_.on_event_connection_closing) {
        options_.on_event_connection_closing(c.conn.get());
      }
      c.conn.reset();
    }
  }

  std::thread maintenance;
  std::weak_ptr<Core> self;  // set right after construction

 private:
  static void CloseCallback(virConnectPtr /*conn*/, int reason, void* opaque) {
    // Runs on libvirt's event loop thread: record and wake, nothing more.
    auto* cookie = static_cast<CloseCookie*>(opaque);
    if (std::shared_ptr<Core> core = cookie->core.lock()) {
      core->OnClosed(cookie->slot, cookie->generation, reason);
    }
  }
  static void FreeCookie(void* opaque) { delete static_cast<CloseCookie*>(opaque); }
  // Fails when the callback has already fired (and so was released).
  static void UnregisterClose(virConnectPtr conn) {
    if (virConnectUnregisterCloseCallback(conn, &Core::CloseCallback) < 0) virResetLastError();
  }

  absl::StatusOr<ConnectHandle> Open(int slot, uint64_t* generation) {
    {
      absl::MutexLock lock(&mu_);
      *generation = ++slots_[slot].generation;
      // A close seen for an earlier attempt (say, during a failed resync)
      // must not mark this new connection broken.
      slots_[slot].broken = false;
    }
    const unsigned int flags = options_.read_only ? VIR_CONNECT_RO : 0;
    ConnectHandle conn(virConnectOpenAuth(options_.uri.c_str(), virConnectAuthPtrDefault, flags));
    if (!conn) return LastLibvirtError(options_.uri);
    // Only the remote driver (every daemon URI, qemu:///system included)
    // has keepalive and close callbacks; in-process drivers (test:///,
    // qemu:///embed) refuse keepalive, which tells them apart. Interval -1
    // (keepalive off) still answers the question.
    const int interval = options_.keepalive_interval_s > 0 ? options_.keepalive_interval_s : -1;
    const bool remote = virConnectSetKeepAlive(conn.get(), interval,
                                               static_cast<unsigned>(options_.keepalive_count)) == 0;
    if (!remote) {
      LogDebug(LastLibvirtError("keepalive").message());
      return conn;  // in-process: nothing to lose, no close callback
    }
    // libvirt owns the cookie: it frees it when the callback has fired, was
    // unregistered, or the connection is disposed. (A callback may fire
    // while the maintenance thread is dropping its connection: the cookie's
    // weak reference and generation make that harmless.)
    auto* cookie = new CloseCookie{self, slot, *generation};
    if (virConnectRegisterCloseCallback(conn.get(), &Core::CloseCallback, cookie,
                                        &Core::FreeCookie) < 0) {
      delete cookie;
      LogDebug(LastLibvirtError("close callback").message());
    }
    return conn;
  }

  int LiveCountLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int n = 0;
    for (const Slot& s : slots_) n += (s.conn && !s.broken) ? 1 : 0;
    return n;
  }
  bool SlotFreeOrDownLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (stopping_) return true;
    bool any_live = false;
    for (const Slot& s : slots_) {
      if (!s.conn || s.broken) continue;
      any_live = true;
      if (s.in_flight < options_.max_calls_per_connection && s.held == 0) return true;
    }
    return !any_live;
  }
  bool WakeRequestedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_; }
  bool FirstPassDoneLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return first_pass_done_; }
  bool MaintenanceExitedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return maintenance_exited_;
  }

  const Options options_;
  // Lock order: notify_mu_ before mu_.
  absl::Mutex notify_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::function<void(bool)> listener_ ABSL_GUARDED_BY(notify_mu_);
  mutable absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool first_pass_done_ ABSL_GUARDED_BY(mu_) = false;
  bool maintenance_exited_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<bool> announced_up_ ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_;  // used by the maintenance thread only
};

// --- Lease

ConnectionPool::Lease::Lease(std::shared_ptr<Core> core, int slot, uint64_t generation,
                             virConnectPtr conn, bool hold)
    : core_(std::move(core)), slot_(slot), generation_(generation), conn_(conn), hold_(hold) {}

ConnectionPool::Lease::Lease(Lease&& other) noexcept
    : core_(std::move(other.core_)),
      slot_(other.slot_),
      generation_(other.generation_),
      conn_(other.conn_),
      hold_(other.hold_) {
  other.conn_ = nullptr;
}

ConnectionPool::Lease& ConnectionPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    core_ = std::move(other.core_);
    slot_ = other.slot_;
    generation_ = other.generation_;
    conn_ = other.conn_;
    hold_ = other.hold_;
    other.conn_ = nullptr;
  }
  return *this;
}

ConnectionPool::Lease::~Lease() { Release(); }

void ConnectionPool::Lease::Release() {
  if (conn_ == nullptr) return;
  core_->Release(slot_, generation_, conn_, hold_);
  conn_ = nullptr;
  core_.reset();
}

// --- ConnectionPool

ConnectionPool::ConnectionPool(Options options)
    : options_(options), core_(std::make_shared<Core>(std::move(options))) {
  core_->self = core_;
}

absl::StatusOr<std::unique_ptr<ConnectionPool>> ConnectionPool::Create(Options options) {
  if (options.uri.empty()) return absl::InvalidArgumentError("libvirt URI is empty");
  if (options.size < 1 || options.size > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pool_size must be between 1 and 64, got ", options.size));
  }
  if (options.max_calls_per_connection < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_calls_per_connection must be at least 1, got ", options.max_calls_per_connection));
  }
  if (absl::Status s = EnsureLibvirtEventLoop(); !s.ok()) return s;
  std::unique_ptr<ConnectionPool> pool(new ConnectionPool(std::move(options)));
  // The thread owns a reference: Shutdown may abandon it inside a stuck open.
  pool->core_->maintenance = std::thread([core = pool->core_] { core->MaintenanceLoop(); });
  if (!pool->core_->WaitFirstPass(pool->options_.initial_connect_wait)) {
    LogWarning("libvirt at ", pool->options_.uri, " has not answered within ",
               absl::FormatDuration(pool->options_.initial_connect_wait),
               "; serving NOT_SERVING until it does");
  }
  return pool;
}

ConnectionPool::~ConnectionPool() { Shutdown(); }

absl::StatusOr<ConnectionPool::Lease> ConnectionPool::Acquire(absl::Time deadline) {
  absl::StatusOr<Core::Acquired> got = core_->Acquire(deadline);
  if (!got.ok()) return got.status();
  return Lease(core_, got->slot, got->generation, got->conn, /*hold=*/false);
}

void ConnectionPool::SetAvailabilityListener(std::function<void(bool up)> listener) {
  core_->SetListener(std::move(listener));
}

ConnectionPool::Snapshot ConnectionPool::GetSnapshot() const { return core_->GetSnapshot(); }

bool ConnectionPool::Retire(virConnectPtr conn) { return core_->Retire(conn); }

std::optional<ConnectionPool::Lease> ConnectionPool::Hold(virConnectPtr conn) {
  std::optional<Core::Acquired> got = core_->Hold(conn);
  if (!got) return std::nullopt;
  return Lease(core_, got->slot, got->generation, got->conn, /*hold=*/true);
}

void ConnectionPool::Shutdown(absl::Time deadline) {
  if (!core_->maintenance.joinable()) return;
  // A thread not stuck in libvirt stops within microseconds; give it that
  // much even when the caller's grace is used up.
  deadline = std::max(deadline, absl::Now() + absl::Milliseconds(200));
  bool maintenance_stopped = false;
  std::vector<Core::Stopped> conns = core_->Stop(deadline, &maintenance_stopped);
  if (maintenance_stopped) {
    core_->maintenance.join();
  } else {
    LogWarning("shutdown: abandoning the libvirt maintenance thread, stuck in libvirt");
    core_->maintenance.detach();
  }
  // Closing talks to libvirtd, which may be stalled: close on a thread of its
  // own and wait for it only until the deadline.
  auto done = std::make_shared<absl::Notification>();
  std::thread closer([core = core_, conns = std::move(conns), done]() mutable {
    core->CloseAll(std::move(conns));
    done->Notify();
  });
  if (done->WaitForNotificationWithDeadline(deadline)) {
    closer.join();
  } else {
    LogWarning("shutdown: abandoning libvirt connections that did not close in time");
    closer.detach();
  }
}

}  // namespace virtgate
