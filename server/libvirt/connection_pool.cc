#include "server/libvirt/connection_pool.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/base/bounded_run.h"
#include "server/base/log.h"
#include "server/libvirt/event_loop.h"

namespace virtgate {
// Shared by the pool, its leases, its close callbacks and its maintenance
// thread, so that any of them outliving the pool (a worker abandoned in a
// stuck libvirt call, a maintenance thread stuck opening) stays valid.
class ConnectionPool::Core final : public CloseListener,
                                   public ReconnectSignal::Listener,
                                   public std::enable_shared_from_this<Core> {
 public:
  Core(Options options, std::shared_ptr<Availability> availability,
       std::shared_ptr<ReconnectSignal> reconnect)
      : options_(std::move(options)),
        availability_(std::move(availability)),
        reconnect_(std::move(reconnect)) {
    for (int i = 0; i < options_.size; ++i) {
      slots_.emplace_back(options_.initial_backoff, options_.max_backoff);
    }
  }

  struct Slot {
    Slot(absl::Duration initial, absl::Duration max) : backoff(initial, max) {}
    ConnectHandle conn;  // null while closed
    std::shared_ptr<DomainHandles> handles;
    int in_flight = 0;     // leases out on the current connection
    bool broken = false;   // seen dead; the maintenance thread replaces it
    bool retired = false;  // broken by Retire(): a call on it is stuck
    bool replacing = false;  // a retired connection dropped, its replacement not yet tried
    absl::Time opened_at;
    bool ever_opened = false;  // a later open is a reconnect
    absl::Time next_attempt = absl::InfinitePast();
    Backoff backoff;
    // Bumps whenever the slot's connection is dropped or opened, so releases
    // of leases on an older connection, and its close callbacks, are ignored.
    uint64_t generation = 0;
  };

  struct Acquired {
    int slot;
    uint64_t generation;
    virConnectPtr conn;
    std::shared_ptr<DomainHandles> handles;
  };

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
        if (s.in_flight >= options_.max_calls_per_connection) continue;
        if (best < 0 || s.in_flight < slots_[best].in_flight) best = i;  // least loaded
      }
      if (best >= 0) {
        Slot& s = slots_[best];
        ++s.in_flight;
        virConnectRef(s.conn.get());  // the lease's own reference
        return Acquired{best, s.generation, s.conn.get(), s.handles};
      }
      // A retired connection's replacement is on its way: wait for it.
      if (live == 0 && !ReplacingLocked()) return UnavailableLocked();
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

  void Release(int slot, uint64_t generation, virConnectPtr conn) {
    // Cheap and local (no round trip): catches a connection that died under
    // this call even on drivers without a close callback.
    const bool alive = virConnectIsAlive(conn) == 1;
    {
      absl::MutexLock lock(&mu_);
      Slot& s = slots_[slot];
      if (s.generation == generation) {
        --s.in_flight;
        if (!alive) MarkBrokenLocked(slot, "connection is no longer alive");
      }
    }
    virConnectClose(conn);  // drop the lease's reference
  }

  void OnConnectionClosed(uint64_t tag, const std::string& reason) override {
    const int slot = static_cast<int>(tag & 0xff);
    absl::MutexLock lock(&mu_);
    if (slots_[slot].generation != tag >> 8) return;
    MarkBrokenLocked(slot, absl::StrCat("connection closed (", reason, ")"));
  }

  void RetryNow() override {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    for (Slot& s : slots_) {
      if (s.conn || s.next_attempt <= now) continue;
      s.next_attempt = now;
      s.backoff.Reset();
      wake_ = true;
    }
  }

  bool Retire(virConnectPtr conn) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
      Slot& s = slots_[i];
      if (s.conn && s.conn.get() == conn && !s.broken) {
        s.retired = true;
        MarkBrokenLocked(i, "");
        return true;
      }
    }
    return false;
  }

  void MaintenanceLoop() {
    for (;;) {
      DropBroken();
      OpenDue();
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

  bool WaitFirstPass(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(this, &Core::FirstPassDoneLocked), deadline);
  }

  Snapshot GetSnapshot() {
    absl::MutexLock lock(&mu_);
    Snapshot snap;
    snap.connections_up = LiveCountLocked();
    snap.connections_total = static_cast<int>(slots_.size());
    for (const Slot& s : slots_) snap.in_flight += s.in_flight;
    snap.last_error = last_error_;
    snap.reconnects = reconnects_;
    return snap;
  }

  // Stops the maintenance thread (waiting for it until `deadline`) and takes
  // the connections out of the pool. Returns them for the caller to close.
  // (Its domain handles hold references to it: they go first.)
  struct Closing {
    std::vector<std::shared_ptr<DomainHandles>> handles;
    std::vector<ConnectHandle> conns;
  };
  Closing Stop(absl::Time deadline, bool* maintenance_stopped) {
    reconnect_->Remove(this);  // not under mu_: Reached() calls RetryNow under its own lock
    Closing closing;
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_ = true;
    *maintenance_stopped = mu_.AwaitWithDeadline(
        absl::Condition(this, &Core::MaintenanceExitedLocked), deadline);
    for (Slot& s : slots_) {
      if (s.conn) closing.conns.push_back(std::move(s.conn));
      if (s.handles) closing.handles.push_back(std::move(s.handles));
      ++s.generation;
    }
    return closing;
  }

  std::thread maintenance;

 private:
  static uint64_t Tag(int slot, uint64_t generation) { return generation << 8 | slot; }

  // `why` empty: retired, not lost (no error to report).
  void MarkBrokenLocked(int slot, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Slot& s = slots_[slot];
    if (!s.conn || s.broken) return;
    s.broken = true;
    if (!why.empty()) last_error_ = absl::StrCat(options_.connect.uri, ": ", why);
    wake_ = true;
    UpdateAvailabilityLocked();
  }

  // Reports the change at once, from whichever thread saw it. A retired
  // connection being replaced does not make libvirt unavailable.
  void UpdateAvailabilityLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int live = LiveCountLocked();
    const bool up = live > 0 || ReplacingLocked();
    if (live == static_cast<int>(slots_.size())) last_error_.clear();
    availability_->SetCallsUp(up);
    if (announced_up_.has_value() && *announced_up_ == up) return;
    announced_up_ = up;
    if (up) {
      LogInfo("connected to ", options_.connect.uri, " (", live, "/", slots_.size(),
              " call connections)");
    } else {
      LogWarning("hypervisor unavailable: ", last_error_, "; retrying with backoff");
    }
  }

  absl::Status UnavailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::UnavailableError(absl::StrCat(
        "hypervisor unavailable: ", last_error_.empty() ? options_.connect.uri : last_error_));
  }

  // Closes connections seen dead. Their RPCs fail at once (the client side
  // is already closed), so this does not block on a stalled daemon.
  void DropBroken() {
    SweepLiveness();
    std::vector<std::pair<int, ConnectHandle>> to_close;
    std::vector<bool> retired;
    std::vector<std::shared_ptr<DomainHandles>> handles;  // dropped outside the lock
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
        Slot& s = slots_[i];
        if (!s.conn || !s.broken) continue;
        to_close.emplace_back(i, std::move(s.conn));
        retired.push_back(s.retired);
        handles.push_back(std::move(s.handles));
        s.replacing = s.retired;
        // A connection that had been up a while is reopened at once; one
        // that died right after opening (a daemon crashing at every
        // connection) waits out the backoff.
        if (s.retired || now - s.opened_at >= kStableAfter) {
          s.backoff.Reset();
          s.next_attempt = now;
        } else {
          s.next_attempt = now + s.backoff.Next();
        }
        s.broken = false;
        s.retired = false;
        s.in_flight = 0;  // leases still out belong to the old generation
        ++s.generation;
      }
    }
    for (size_t i = 0; i < to_close.size(); ++i) {
      auto& [slot, conn] = to_close[i];
      if (retired[i]) {
        LogWarning("libvirt connection ", slot, " to ", options_.connect.uri,
                   " retired: a call on it is stuck; opening a replacement");
      }
      // The registration holds a reference: kept, it would keep a live
      // (retired) connection open for as long as libvirtd runs.
      // Unregistering is local; a retired connection closes when its stuck
      // call returns and drops the last reference.
      ForgetCloseCallback(conn.get());
      conn.reset();  // leases still out hold their own references
    }
  }

  // virConnectIsAlive on every live connection, outside the lock: catches a
  // death no callback reported (drivers without one).
  void SweepLiveness() {
    std::vector<std::pair<int, uint64_t>> dead;
    std::vector<std::tuple<int, uint64_t, virConnectPtr>> live;
    {
      absl::MutexLock lock(&mu_);
      for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
        Slot& s = slots_[i];
        if (!s.conn || s.broken) continue;
        virConnectRef(s.conn.get());
        live.emplace_back(i, s.generation, s.conn.get());
      }
    }
    for (auto& [slot, generation, conn] : live) {
      if (virConnectIsAlive(conn) != 1) dead.emplace_back(slot, generation);
      virConnectClose(conn);
    }
    absl::MutexLock lock(&mu_);
    for (auto& [slot, generation] : dead) {
      if (slots_[slot].generation == generation) {
        MarkBrokenLocked(slot, "connection is no longer alive");
      }
    }
  }

  // Opens the connections that are due, one by one; stops early on Stop().
  void OpenDue() {
    for (int slot = 0; slot < options_.size; ++slot) {  // slots_ never resizes
      uint64_t generation;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        Slot& s = slots_[slot];
        if (s.conn || s.next_attempt > absl::Now()) continue;
        generation = ++s.generation;
      }
      absl::StatusOr<ConnectHandle> opened =
          OpenConnection(options_.connect, weak_from_this(), Tag(slot, generation));
      ConnectHandle discard;
      {
        absl::MutexLock lock(&mu_);
        Slot& s = slots_[slot];
        s.replacing = false;
        if (opened.ok() && !stopping_ && s.generation == generation) {
          s.conn = *std::move(opened);
          s.handles = std::make_shared<DomainHandles>();
          s.opened_at = absl::Now();
          if (s.ever_opened) ++reconnects_;
          s.ever_opened = true;
          UpdateAvailabilityLocked();
        } else if (opened.ok()) {
          discard = *std::move(opened);  // stopped meanwhile: close it below
        } else {
          last_error_ = std::string(opened.status().message());
          const absl::Duration wait = s.backoff.Next();
          s.next_attempt = absl::Now() + wait;
          // (Only losses and recoveries are logged above debug.)
          LogDebug("libvirt connection ", slot, ": cannot open (", last_error_,
                   "); next attempt in ", absl::FormatDuration(wait));
          UpdateAvailabilityLocked();
        }
      }
      if (discard) {
        ForgetCloseCallback(discard.get());
      } else if (opened.ok()) {
        reconnect_->Reached(this);  // the feed need not wait out its backoff
      }
    }
  }

  bool ReplacingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const Slot& s : slots_) {
      if (s.replacing || (s.conn && s.retired)) return true;
    }
    return false;
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
      if (s.in_flight < options_.max_calls_per_connection) return true;
    }
    return !any_live && !ReplacingLocked();
  }
  bool WakeRequestedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_; }
  bool FirstPassDoneLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return first_pass_done_; }
  bool MaintenanceExitedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return maintenance_exited_;
  }

  const Options options_;
  const std::shared_ptr<Availability> availability_;
  const std::shared_ptr<ReconnectSignal> reconnect_;
  mutable absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t reconnects_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool first_pass_done_ ABSL_GUARDED_BY(mu_) = false;
  bool maintenance_exited_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<bool> announced_up_ ABSL_GUARDED_BY(mu_);
};

// --- Lease

ConnectionPool::Lease::Lease(std::shared_ptr<Core> core, int slot, uint64_t generation,
                             virConnectPtr conn, std::shared_ptr<DomainHandles> handles)
    : core_(std::move(core)),
      slot_(slot),
      generation_(generation),
      conn_(conn),
      handles_(std::move(handles)) {}

ConnectionPool::Lease::Lease(Lease&& other) noexcept
    : core_(std::move(other.core_)),
      slot_(other.slot_),
      generation_(other.generation_),
      conn_(other.conn_),
      handles_(std::move(other.handles_)) {
  other.conn_ = nullptr;
}

ConnectionPool::Lease& ConnectionPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    core_ = std::move(other.core_);
    slot_ = other.slot_;
    generation_ = other.generation_;
    conn_ = other.conn_;
    handles_ = std::move(other.handles_);
    other.conn_ = nullptr;
  }
  return *this;
}

ConnectionPool::Lease::~Lease() { Release(); }

void ConnectionPool::Lease::Release() {
  if (conn_ == nullptr) return;
  core_->Release(slot_, generation_, conn_);
  conn_ = nullptr;
  core_.reset();
  handles_.reset();
}

// --- ConnectionPool

absl::Status CheckMaxCallsPerConnection(int calls) {
  if (calls >= 1 && calls <= kMaxCallsPerConnection) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--max_calls_per_connection must be between 1 and ", kMaxCallsPerConnection, ", got ",
      calls, ": libvirtd serves at most max_client_requests (", kMaxCallsPerConnection,
      ") calls per connection at once, and a connection with more queued starves its own "
      "keepalive; above 1 also risks libvirt 9.0's client crash (README \"Architecture\")"));
}

absl::StatusOr<std::unique_ptr<ConnectionPool>> ConnectionPool::Create(
    Options options, std::shared_ptr<Availability> availability,
    std::shared_ptr<ReconnectSignal> reconnect) {
  if (options.connect.uri.empty()) return absl::InvalidArgumentError("libvirt URI is empty");
  if (options.size < 1 || options.size > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pool_size must be between 1 and 64, got ", options.size));
  }
  if (absl::Status s = CheckMaxCallsPerConnection(options.max_calls_per_connection); !s.ok()) {
    return s;
  }
  if (absl::Status s = EnsureLibvirtEventLoop(); !s.ok()) return s;
  std::unique_ptr<ConnectionPool> pool(new ConnectionPool(options));
  pool->core_ = std::make_shared<Core>(std::move(options), std::move(availability), reconnect);
  reconnect->Add(pool->core_.get());
  // The thread owns a reference: Shutdown may abandon it inside a stuck open.
  pool->core_->maintenance = std::thread([core = pool->core_] { core->MaintenanceLoop(); });
  return pool;
}

ConnectionPool::~ConnectionPool() { Shutdown(); }

bool ConnectionPool::WaitForFirstAttempt(absl::Time deadline) {
  return core_->WaitFirstPass(deadline);
}

absl::StatusOr<ConnectionPool::Lease> ConnectionPool::Acquire(absl::Time deadline) {
  absl::StatusOr<Core::Acquired> got = core_->Acquire(deadline);
  if (!got.ok()) return got.status();
  return Lease(core_, got->slot, got->generation, got->conn, std::move(got->handles));
}

ConnectionPool::Snapshot ConnectionPool::GetSnapshot() const { return core_->GetSnapshot(); }

bool ConnectionPool::Retire(virConnectPtr conn) { return core_->Retire(conn); }

void ConnectionPool::Shutdown(absl::Time deadline) {
  if (!core_->maintenance.joinable()) return;
  // A thread not stuck in libvirt stops within microseconds; give it that
  // much even when the caller's grace is used up.
  deadline = std::max(deadline, absl::Now() + absl::Milliseconds(200));
  bool maintenance_stopped = false;
  Core::Closing closing = core_->Stop(deadline, &maintenance_stopped);
  if (maintenance_stopped) {
    core_->maintenance.join();
  } else {
    LogWarning("shutdown: abandoning the libvirt maintenance thread, stuck in libvirt");
    core_->maintenance.detach();
    NoteAbandonedThread();
  }
  // Closing talks to libvirtd, which may be stalled: on a thread of its own,
  // waited for only until the deadline.
  auto shared = std::make_shared<Core::Closing>(std::move(closing));
  const bool closed = RunOrAbandon(
      [shared] {
        shared->handles.clear();
        for (ConnectHandle& c : shared->conns) {
          ForgetCloseCallback(c.get());
          c.reset();
        }
      },
      deadline);
  if (!closed) LogWarning("shutdown: abandoning libvirt connections that did not close in time");
}

}  // namespace virtgate
