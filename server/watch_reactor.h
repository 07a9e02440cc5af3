// WatchReactor: one WatchLifecycle stream, fed by an EventHub subscription.
//
// In the manner of gRPC's health WatchReactor: one mutex guards the write
// state; at most one write is in flight; the stream is finished exactly once
// (by overflow, cancellation, a failed write, or server shutdown), and only
// when no write is in flight; OnDone unsubscribes, leaves the registry and
// deletes the reactor. The hub's wake callback (on libvirt's event thread)
// only starts a write if none is in flight.
//
// Ending statuses carry the last sequence the client received, in the
// message and in trailing metadata `virtgate-last-sequence`, so it can resume:
//   RESOURCE_EXHAUSTED  the watcher fell --watch_queue_depth messages behind;
//   UNAVAILABLE         the server is shutting down;
//   OUT_OF_RANGE        the resume point is gone (at start).
//
// send_initial_state: the reactor subscribes first, then lists on a worker;
// it sends one `initial` per matching domain and a `synced` marker, then the
// live events queued since the subscription. An event that races the listing
// may already be reflected in it; its DomainView drops exactly those events that
// are impossible given what the client was shown (a STARTED for a domain
// shown active with that id, a STOPPED for one shown inactive, ...), so no
// transition is lost or duplicated around the marker.
//
// coalesce_ms: the first event opens a window; when it closes, the events
// that arrived within it are reduced to each domain's final event and sent in
// sequence order (so sequences stay increasing and resume stays exact).
// Connection changes close the window at once.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "absl/synchronization/mutex.h"
#include "server/connection_pool.h"
#include "server/domain_lister.h"
#include "server/domain_view.h"
#include "server/event_hub.h"
#include "server/timer_thread.h"
#include "server/worker_pool.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class WatchReactor;

// Everything a watch needs to list domains for send_initial_state.
struct WatchDeps {
  std::shared_ptr<EventHub> hub;
  WorkerPool* workers = nullptr;
  std::shared_ptr<ConnectionPool> connections;
  std::shared_ptr<DomainLister> lister;
  TimerThread* timers = nullptr;  // closes coalescing windows
};

// The open watches, so shutdown can end them. Thread-safe.
class WatchRegistry {
 public:
  void Add(WatchReactor* watch);
  void Remove(WatchReactor* watch);
  // Ends every open watch with UNAVAILABLE; later Add()s are ended at once.
  void EndAll();
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<WatchReactor*> watches_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::WatchLifecycleResponse> {
 public:
  // Starts the stream (or finishes it at once for a bad request). Owned by
  // gRPC until OnDone.
  static WatchReactor* Start(grpc::CallbackServerContext* ctx,
                             const v1::WatchLifecycleRequest& request, const WatchDeps& deps,
                             WatchRegistry* registry);

  // Ends the stream with UNAVAILABLE ("server shutting down"). Any thread.
  void EndForShutdown();

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Lets a listing worker reach the reactor only while it exists.
  struct Handle {
    absl::Mutex mu;
    WatchReactor* watch ABSL_GUARDED_BY(mu);
  };

  WatchReactor(grpc::CallbackServerContext* ctx, std::shared_ptr<EventHub> hub,
               WatchRegistry* registry)
      : ctx_(ctx), hub_(std::move(hub)), registry_(registry), handle_(std::make_shared<Handle>()) {
    absl::MutexLock lock(&handle_->mu);
    handle_->watch = this;
  }

  // Lists the domains on a worker and queues initial states + synced.
  void StartInitialListing(const WatchDeps& deps, const WatchFilter& domains_only);
  // On the worker, with the listing (or why it failed).
  void OnInitialListing(absl::StatusOr<std::vector<v1::Domain>> listed);
  // At the listing's deadline: ends the watch if it is still listing.
  void OnInitialListingDeadline();

  // Called by the hub when messages arrive or the queue overflows.
  void OnMessages();
  // How the stream ends; with_position appends the last sequence and epoch
  // to the message (they are always in the trailers).
  struct Ending {
    grpc::StatusCode code;
    std::string why;
    bool with_position = false;
    static Ending From(const absl::Status& status);
  };

  // Writes the next queued message, or finishes if one is due.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteLocked(EventHub::Message m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the coalescing window's events to ready_, in sequence order.
  void CloseWindowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes now if no write is in flight, else after it completes.
  void FinishLocked(Ending ending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the trailers and calls Finish with ending_.
  void EndNowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  grpc::CallbackServerContext* const ctx_;
  const std::shared_ptr<EventHub> hub_;
  WatchRegistry* const registry_;
  std::shared_ptr<EventHub::Subscriber> subscriber_;  // set once, in Start
  const std::shared_ptr<Handle> handle_;
  // Set in Start: event types this reactor filters itself (initial-state
  // watches see every event of their domains, to keep the view right).
  absl::flat_hash_set<int> local_types_;
  absl::Duration coalesce_ = absl::ZeroDuration();  // set once, in Start
  TimerThread* timers_ = nullptr;                    // likewise

  absl::Mutex mu_;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Ending> ending_ ABSL_GUARDED_BY(mu_);  // set once, by FinishLocked
  EventHub::Message writing_ ABSL_GUARDED_BY(mu_);  // kept alive until OnWriteDone
  uint64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool listing_ ABSL_GUARDED_BY(mu_) = false;  // initial states not ready yet
  std::optional<DomainView> view_ ABSL_GUARDED_BY(mu_);
  // Coalescing: the open window's last event per domain. ready_: what is to
  // be written next, in order (initial states and synced, or closed windows).
  absl::flat_hash_map<std::string, EventHub::Message> window_ ABSL_GUARDED_BY(mu_);
  absl::Time window_closes_ ABSL_GUARDED_BY(mu_);
  std::deque<EventHub::Message> ready_ ABSL_GUARDED_BY(mu_);
  absl::Time view_until_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
