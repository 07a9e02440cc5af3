#include "server/libvirt/lifecycle_feed.h"

#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/base/bounded_run.h"
#include "server/base/log.h"
#include "server/libvirt/domain_state.h"
#include "server/libvirt/lifecycle_subscription.h"

namespace virtgate {
// Shared by the feed, its thread and its close callback, so that a thread
// abandoned in a stuck libvirt call stays valid after the feed is gone.
class LifecycleFeed::Core final : public CloseListener,
                                  public ReconnectSignal::Listener,
                                  public std::enable_shared_from_this<Core> {
 public:
  Core(Options options, std::shared_ptr<DomainCache> cache, std::shared_ptr<HostFacts> host,
       std::shared_ptr<DomainReads> reads, std::shared_ptr<ReconnectSignal> reconnect)
      : options_(std::move(options)),
        cache_(cache),
        host_(std::move(host)),
        reads_(std::move(reads)),
        reconnect_(std::move(reconnect)),
        subscription_(std::move(cache)),
        backoff_(options_.initial_backoff, options_.max_backoff) {}

  void Run() {
    for (;;) {
      bool broken;
      bool due;
      std::string why;
      {
        absl::MutexLock lock(&mu_);
        const absl::Time wake_at =
            conn_ ? absl::Now() + options_.check_interval : next_attempt_;
        mu_.AwaitWithDeadline(absl::Condition(this, &Core::WakeRequestedLocked), wake_at);
        wake_ = false;
        if (stopping_) break;
        broken = broken_;
        why = broken_reason_;
        due = absl::Now() >= next_attempt_;
      }
      if (conn_ && !broken && virConnectIsAlive(conn_.get()) != 1) {
        broken = true;
        why = "connection is no longer alive";
      }
      if (conn_ && broken) Drop(why);
      if (!conn_ && due) {
        Connect();
      } else if (conn_ && events_ && cache_->TakeConfirmedDrift(absl::Now())) {
        Relist();
      }
    }
    absl::MutexLock lock(&mu_);
    exited_ = true;
  }

  void OnConnectionClosed(uint64_t tag, const std::string& reason) override {
    absl::MutexLock lock(&mu_);
    if (tag != generation_ || broken_) return;
    broken_ = true;
    broken_reason_ = absl::StrCat("connection closed (", reason, ")");
    wake_ = true;
  }

  void RetryNow() override {
    absl::MutexLock lock(&mu_);
    if (next_attempt_ <= absl::Now()) return;
    next_attempt_ = absl::Now();
    backoff_.Reset();
    wake_ = true;
  }

  bool WaitFirstAttempt(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&first_attempt_done_), deadline);
  }

  uint64_t reconnects() const {
    absl::MutexLock lock(&mu_);
    return connects_ > 0 ? connects_ - 1 : 0;
  }
  std::string last_error() const {
    absl::MutexLock lock(&mu_);
    return last_error_;
  }

  // Stops the thread, waiting for it until `deadline`. True if it exited
  // (its connection may then be closed by the caller: Close()).
  bool Stop(absl::Time deadline) {
    reconnect_->Remove(this);
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_ = true;
    return mu_.AwaitWithDeadline(absl::Condition(&exited_), deadline);
  }

  // After the thread exited: drops the registration and the connection.
  void Close() {
    if (!conn_) return;
    subscription_.Deregister(conn_.get());
    ForgetCloseCallback(conn_.get());
    conn_.reset();
  }

  std::thread thread;

 private:
  bool WakeRequestedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return wake_ || stopping_;
  }

  void Connect() {
    uint64_t generation;
    {
      absl::MutexLock lock(&mu_);
      generation = ++generation_;
      broken_ = false;
    }
    absl::StatusOr<ConnectHandle> opened =
        OpenConnection(options_.connect, weak_from_this(), generation);
    if (!opened.ok()) {
      Failed(std::string(opened.status().message()));
      return;
    }
    // Host facts first, so GetHostInfo has them as soon as events flow.
    if (absl::Status s = host_->Refresh(opened->get()); !s.ok()) {
      LogWarning("cannot read host facts: ", s.message());
    }
    cache_->BeginResync();
    absl::Status registered = subscription_.Register(opened->get());
    if (registered.code() == absl::StatusCode::kUnimplemented) {
      // The connection stays (host facts); the cache cannot be kept current.
      LogWarning("this libvirt driver has no lifecycle events; watches will see none and "
                 "reads take state from libvirt: ", registered.message());
      (void)cache_->FinishResync(absl::UnimplementedError(
          absl::StrCat("this libvirt driver has no lifecycle events (", registered.message(), ")")));
      Installed(*std::move(opened), /*events=*/false);
      return;
    }
    absl::StatusOr<std::vector<v1::Domain>> listed =
        registered.ok() ? ListStates(opened->get()) : registered;
    const absl::Status status = cache_->FinishResync(std::move(listed));
    if (!status.ok()) {
      subscription_.Deregister(opened->get());
      ForgetCloseCallback(opened->get());
      Failed(absl::StrCat(options_.connect.uri, ": ", status.message()));
      return;
    }
    Installed(*std::move(opened), /*events=*/true);
  }

  void Installed(ConnectHandle conn, bool events) {
    conn_ = std::move(conn);
    events_ = events;
    opened_at_ = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      last_error_ = events ? "" : "this libvirt driver has no lifecycle events";
      first_attempt_done_ = true;
      ++connects_;
    }
    LogInfo("lifecycle events connected to ", options_.connect.uri);
    reconnect_->Reached(this);  // the pool need not wait out its backoff
  }

  void Failed(const std::string& why) {
    cache_->OnLost(why);
    absl::MutexLock lock(&mu_);
    last_error_ = why;
    const absl::Duration wait = backoff_.Next();
    next_attempt_ = absl::Now() + wait;
    first_attempt_done_ = true;
    LogDebug("event connection: cannot open (", why, "); next attempt in ",
             absl::FormatDuration(wait));
  }

  void Drop(const std::string& why) {
    const std::string reason = absl::StrCat(options_.connect.uri, ": ", why);
    LogWarning("lifecycle events lost: ", reason, "; reconnecting");
    // Drops the registrations, which hold references to the connection
    // (each reconnect would leak one). Local on a dead connection.
    Close();
    events_ = false;
    cache_->OnLost(reason);
    absl::MutexLock lock(&mu_);
    last_error_ = reason;
    // A connection that had been up a while is reopened at once; one that
    // died right after opening (a daemon crashing at every connection) waits
    // out the backoff: each reopen lists every domain again.
    if (absl::Now() - opened_at_ >= kStableAfter) {
      backoff_.Reset();
      next_attempt_ = absl::Now();
    } else {
      next_attempt_ = absl::Now() + backoff_.Next();
    }
  }

  // Re-lists on the live connection (the cache found itself out of step).
  void Relist() {
    cache_->BeginResync();
    const absl::Status status = cache_->FinishResync(ListStates(conn_.get()));
    if (!status.ok()) Drop(std::string(status.message()));
  }

  // Every domain's identity, state and persistence: two calls, whatever the
  // number of domains, and none touches a QEMU monitor.
  absl::StatusOr<std::vector<v1::Domain>> ListStates(virConnectPtr conn) {
    absl::StatusOr<std::vector<DomainStats>> stats =
        reads_->AllStats(conn, VIR_DOMAIN_STATS_STATE);
    if (!stats.ok()) return stats.status();
    absl::StatusOr<absl::flat_hash_set<std::string>> transient =
        reads_->ListUuids(conn, VIR_CONNECT_LIST_DOMAINS_TRANSIENT);
    if (!transient.ok()) return transient.status();
    std::vector<v1::Domain> out;
    out.reserve(stats->size());
    for (const DomainStats& s : *stats) {
      v1::Domain d = DomainFromStats(s);
      d.set_persistent(!transient->contains(s.uuid));
      out.push_back(std::move(d));
    }
    return out;
  }

  const Options options_;
  const std::shared_ptr<DomainCache> cache_;
  const std::shared_ptr<HostFacts> host_;
  const std::shared_ptr<DomainReads> reads_;
  const std::shared_ptr<ReconnectSignal> reconnect_;
  LifecycleSubscription subscription_;
  // The feed thread's alone (and the closer's, once the thread exited).
  ConnectHandle conn_;
  bool events_ = false;  // registered for lifecycle events on conn_
  absl::Time opened_at_;

  mutable absl::Mutex mu_;
  Backoff backoff_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // of the connection being opened or held
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::string broken_reason_ ABSL_GUARDED_BY(mu_);
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = true;  // connect at once
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool first_attempt_done_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t connects_ ABSL_GUARDED_BY(mu_) = 0;  // event connections installed
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
};

std::unique_ptr<LifecycleFeed> LifecycleFeed::Start(Options options,
                                                    std::shared_ptr<DomainCache> cache,
                                                    std::shared_ptr<HostFacts> host,
                                                    std::shared_ptr<DomainReads> reads,
                                                    std::shared_ptr<ReconnectSignal> reconnect) {
  auto core = std::make_shared<Core>(std::move(options), std::move(cache), std::move(host),
                                     std::move(reads), reconnect);
  reconnect->Add(core.get());
  // The thread owns a reference: Shutdown may abandon it inside a stuck call.
  core->thread = std::thread([core] { core->Run(); });
  return std::unique_ptr<LifecycleFeed>(new LifecycleFeed(std::move(core)));
}

LifecycleFeed::~LifecycleFeed() { Shutdown(); }

bool LifecycleFeed::WaitForFirstAttempt(absl::Time deadline) {
  return core_->WaitFirstAttempt(deadline);
}

std::string LifecycleFeed::last_error() const { return core_->last_error(); }

uint64_t LifecycleFeed::reconnects() const { return core_->reconnects(); }

void LifecycleFeed::Shutdown(absl::Time deadline) {
  if (!core_->thread.joinable()) return;
  deadline = std::max(deadline, absl::Now() + absl::Milliseconds(200));
  if (!core_->Stop(deadline)) {
    LogWarning("shutdown: abandoning the lifecycle event thread, stuck in libvirt");
    core_->thread.detach();
    NoteAbandonedThread();
    return;
  }
  core_->thread.join();
  // Closing talks to libvirtd, which may be stalled: on a thread of its own.
  if (!RunOrAbandon([core = core_] { core->Close(); }, deadline)) {
    LogWarning("shutdown: abandoning the event connection, which did not close in time");
  }
}

}  // namespace virtgate
