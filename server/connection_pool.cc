#include "server/connection_pool.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/libvirt_errors.h"
#include "server/libvirt_event_loop.h"
#include "server/libvirt_handles.h"
#include "server/log.h"

namespace virtgate {

// Shared by the pool, its leases and its close callbacks, so that a lease
// outliving the pool (a worker abandoned in a stuck libvirt call) stays valid.
class ConnectionPool::Core {
 public:
  explicit Core(Options options) : options_(std::move(options)), slots_(options_.size) {}

  struct Slot {
    ConnectHandle conn;         // null while closed
    int in_flight = 0;          // leases out on this connection
    bool broken = false;        // seen dead; the maintenance thread replaces it
    absl::Time next_attempt = absl::InfinitePast();
    absl::Duration backoff = absl::ZeroDuration();
    uint64_t generation = 0;    // bumps on every open, so stale callbacks are ignored
  };

  // Opaque data handed to libvirt's close callback.
  struct CloseCookie {
    std::weak_ptr<Core> core;
    int slot;
    uint64_t generation;
  };

  const Options& options() const { return options_; }

  absl::StatusOr<std::pair<int, virConnectPtr>> Acquire(absl::Time deadline) {
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
        if (best < 0 || s.in_flight < slots_[best].in_flight) best = i;
      }
      if (best >= 0) {
        Slot& s = slots_[best];
        ++s.in_flight;
        virConnectRef(s.conn.get());  // the lease's own reference
        return std::make_pair(best, s.conn.get());
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

  void Release(int slot, virConnectPtr conn) {
    // Cheap and local (no round trip): catches a connection that died under
    // this call even on drivers without a close callback.
    const bool alive = virConnectIsAlive(conn) == 1;
    {
      absl::MutexLock lock(&mu_);
      Slot& s = slots_[slot];
      --s.in_flight;
      if (!alive && s.conn.get() == conn && !s.broken) {
        s.broken = true;
        last_error_ = absl::StrCat(options_.uri, ": connection is no longer alive");
        wake_ = true;
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

  absl::Status UnavailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::UnavailableError(absl::StrCat(
        "hypervisor unavailable: ", last_error_.empty() ? options_.uri : last_error_));
  }

  // One pass: drop broken connections, open those due. Runs on the
  // maintenance thread (and once from Create).
  void MaintainOnce() {
    std::vector<std::pair<int, ConnectHandle>> to_close;
    std::vector<int> to_open;
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
          to_close.emplace_back(i, std::move(s.conn));
          s.broken = false;
          s.next_attempt = now;  // first reconnect attempt is immediate
        }
        if (!s.conn && s.next_attempt <= now) to_open.push_back(i);
      }
    }
    for (auto& [slot, conn] : to_close) {
      virConnectUnregisterCloseCallback(conn.get(), &Core::CloseCallback);
      LogWarning("libvirt connection ", slot, " to ", options_.uri, " lost; reopening");
      conn.reset();  // leases still out hold their own references
      (void)slot;
    }
    for (int slot : to_open) {
      absl::StatusOr<ConnectHandle> opened = Open(slot);
      absl::MutexLock lock(&mu_);
      Slot& s = slots_[slot];
      if (opened.ok()) {
        s.conn = std::move(*opened);
        s.backoff = absl::ZeroDuration();
      } else {
        last_error_ = std::string(opened.status().message());
        s.backoff = s.backoff == absl::ZeroDuration()
                        ? options_.initial_backoff
                        : std::min(s.backoff * 2, options_.max_backoff);
        // Full jitter on the upper half keeps K slots (and many servers
        // restarting together) from reconnecting in lockstep.
        const double jitter = absl::Uniform(rng_, 0.5, 1.0);
        s.next_attempt = absl::Now() + s.backoff * jitter;
      }
    }
  }

  void MaintenanceLoop() {
    for (;;) {
      MaintainOnce();
      NotifyIfChanged();
      absl::MutexLock lock(&mu_);
      absl::Time wake_at = absl::Now() + options_.check_interval;
      for (const Slot& s : slots_) {
        if (!s.conn) wake_at = std::min(wake_at, s.next_attempt);
      }
      mu_.AwaitWithDeadline(absl::Condition(this, &Core::WakeRequestedLocked), wake_at);
      wake_ = false;
      if (stopping_) return;
    }
  }

  void NotifyIfChanged() {
    std::function<void(bool)> listener;
    bool up;
    {
      absl::MutexLock lock(&mu_);
      up = LiveCountLocked() > 0;
      if (announced_up_.has_value() && *announced_up_ == up) return;
      announced_up_ = up;
      listener = listener_;
      if (up) {
        LogInfo("connected to ", options_.uri, " (", LiveCountLocked(), "/", slots_.size(),
                " connections)");
      } else {
        LogWarning("hypervisor unavailable: ", last_error_, "; retrying with backoff");
      }
    }
    if (listener) listener(up);
  }

  void SetListener(std::function<void(bool)> listener) {
    bool up;
    {
      absl::MutexLock lock(&mu_);
      listener_ = listener;
      up = LiveCountLocked() > 0;
    }
    if (listener) listener(up);
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

  void Stop() {
    std::vector<ConnectHandle> conns;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      wake_ = true;
      for (Slot& s : slots_) {
        if (s.conn) conns.push_back(std::move(s.conn));
      }
    }
    for (ConnectHandle& c : conns) {
      virConnectUnregisterCloseCallback(c.get(), &Core::CloseCallback);
    }
  }

  std::thread maintenance;

 private:
  static void CloseCallback(virConnectPtr /*conn*/, int reason, void* opaque) {
    // Runs on libvirt's event loop thread: record and wake, nothing more.
    auto* cookie = static_cast<CloseCookie*>(opaque);
    if (std::shared_ptr<Core> core = cookie->core.lock()) {
      core->OnClosed(cookie->slot, cookie->generation, reason);
    }
  }
  static void FreeCookie(void* opaque) { delete static_cast<CloseCookie*>(opaque); }

  absl::StatusOr<ConnectHandle> Open(int slot) {
    const unsigned int flags = options_.read_only ? VIR_CONNECT_RO : 0;
    ConnectHandle conn(virConnectOpenAuth(options_.uri.c_str(), virConnectAuthPtrDefault, flags));
    if (!conn) return LastLibvirtError(options_.uri);
    if (options_.keepalive_interval_s > 0 &&
        virConnectSetKeepAlive(conn.get(), options_.keepalive_interval_s,
                               static_cast<unsigned>(options_.keepalive_count)) < 0) {
      // Local drivers (test:///, qemu:///embed) have no keepalive.
      LogDebug(LastLibvirtError("keepalive").message());
    }
    uint64_t generation;
    {
      absl::MutexLock lock(&mu_);
      generation = ++slots_[slot].generation;
    }
    auto* cookie = new CloseCookie{weak_from_this_(), slot, generation};
    if (virConnectRegisterCloseCallback(conn.get(), &Core::CloseCallback, cookie,
                                        &Core::FreeCookie) < 0) {
      delete cookie;
      LogDebug(LastLibvirtError("close callback").message());
    }
    return conn;
  }

  std::weak_ptr<Core> weak_from_this_() { return self_; }

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
    return !any_live;
  }
  bool WakeRequestedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_; }

  friend class ConnectionPool;

  const Options options_;
  std::weak_ptr<Core> self_;  // set right after construction
  mutable absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<bool> announced_up_ ABSL_GUARDED_BY(mu_);
  std::function<void(bool)> listener_ ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_;  // used by the maintenance thread only
};

// --- Lease

ConnectionPool::Lease::Lease(std::shared_ptr<Core> core, int slot, virConnectPtr conn)
    : core_(std::move(core)), slot_(slot), conn_(conn) {}

ConnectionPool::Lease::Lease(Lease&& other) noexcept
    : core_(std::move(other.core_)), slot_(other.slot_), conn_(other.conn_) {
  other.conn_ = nullptr;
}

ConnectionPool::Lease& ConnectionPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    core_ = std::move(other.core_);
    slot_ = other.slot_;
    conn_ = other.conn_;
    other.conn_ = nullptr;
  }
  return *this;
}

ConnectionPool::Lease::~Lease() { Release(); }

void ConnectionPool::Lease::Release() {
  if (conn_ == nullptr) return;
  core_->Release(slot_, conn_);
  conn_ = nullptr;
  core_.reset();
}

// --- ConnectionPool

ConnectionPool::ConnectionPool(Options options)
    : options_(options), core_(std::make_shared<Core>(std::move(options))) {
  core_->self_ = core_;
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
  Core* core = pool->core_.get();
  core->MaintainOnce();
  core->NotifyIfChanged();
  core->maintenance = std::thread([core] { core->MaintenanceLoop(); });
  return pool;
}

ConnectionPool::~ConnectionPool() { Shutdown(); }

absl::StatusOr<ConnectionPool::Lease> ConnectionPool::Acquire(absl::Time deadline) {
  absl::StatusOr<std::pair<int, virConnectPtr>> got = core_->Acquire(deadline);
  if (!got.ok()) return got.status();
  return Lease(core_, got->first, got->second);
}

void ConnectionPool::SetAvailabilityListener(std::function<void(bool up)> listener) {
  core_->SetListener(std::move(listener));
}

ConnectionPool::Snapshot ConnectionPool::GetSnapshot() const { return core_->GetSnapshot(); }

void ConnectionPool::Shutdown() {
  if (!core_->maintenance.joinable()) return;
  core_->Stop();
  core_->maintenance.join();
}

}  // namespace virtgate
